#!/bin/sh
# Runs PROGRAM under mpirun with NP processes on this machine, every byte on loopback
# and shared memory: usage run_mpi.sh MPIRUN NP PROGRAM [ARGS...]
# BNORM_MPI_NO_LEAK_CHECK=1 (sanitizer builds) turns LeakSanitizer off in the ranks:
# OpenMPI keeps allocations of MPI_Init past MPI_Finalize.
set -eu
mpirun=$1
np=$2
shift 2
# Shared memory between ranks (vader), bootstrap and PMIx over loopback only.
export OMPI_MCA_btl=self,vader
export OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_btl_tcp_if_include=lo
export PMIX_MCA_ptl_tcp_if_include=lo
# Containers often deny the ptrace-based single copy (CMA): copy through the segment.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
if [ -n "${BNORM_MPI_NO_LEAK_CHECK:-}" ]; then
  export LSAN_OPTIONS="${LSAN_OPTIONS:-}:detect_leaks=0"
fi
# The cores are shared with other work: no binding, more ranks than cores allowed.
exec "$mpirun" -np "$np" --oversubscribe --bind-to none --allow-run-as-root "$@"
