#!/usr/bin/env bash
# Builds the bnorm fuzz target with clang (libFuzzer, AddressSanitizer,
# UndefinedBehaviorSanitizer; the library itself instrumented for coverage) in
# build-fuzz/, then fuzzes the C API for SECONDS seconds in one process, starting from
# the checked-in seeds (test/fuzz/corpus) and what earlier runs found
# (build-fuzz/corpus). A finding stops the run, prints the decoded call and leaves the
# input in build-fuzz/artifacts/ (replay it: build-fuzz/bnorm_fuzz FILE); the exit
# status is then non-zero.
#   test/fuzz/run_fuzz.sh SECONDS [libFuzzer options...]
# Debian 12 packages: clang-14 and libclang-rt-14-dev (libFuzzer and the sanitizer
# runtimes), plus the library's own (meson, ninja-build, pkg-config, cmake,
# libhwy-dev, libtbb-dev); missing ones are installed (as root or with sudo).
# Environment: BNORM_FUZZ_BUILD_DIR (default build-fuzz), FUZZ_SEED (libFuzzer -seed).
set -euo pipefail

cd "$(dirname "$0")/../.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: test/fuzz/run_fuzz.sh SECONDS [libFuzzer options...]" >&2
  exit 2
fi
seconds="$1"
shift
build_dir="${BNORM_FUZZ_BUILD_DIR:-build-fuzz}"

packages=(clang-14 libclang-rt-14-dev meson ninja-build pkg-config cmake libhwy-dev libtbb-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The library: clang, sanitizers, coverage for libFuzzer (fuzzer-no-link), asserts on.
if [ ! -f "$build_dir/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 meson setup "$build_dir" \
    --buildtype=debugoptimized -Db_ndebug=false \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dtests=false -Dbenchmarks=false -Ddnnl=disabled \
    -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
    -Dcpp_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all"
fi
ninja -C "$build_dir" lib/libbnorm.a

# The fuzz target, linked against the static library (the shared one exports only the
# C API, which is all the target uses, but static keeps the coverage in one binary).
fuzzer="$build_dir/bnorm_fuzz"
sources=(test/fuzz/bnorm_fuzz.cc test/reference.h include/bnorm/bnorm.h "$build_dir/lib/libbnorm.a")
if [ ! -x "$fuzzer" ] || [ -n "$(find "${sources[@]}" -newer "$fuzzer" 2>/dev/null)" ]; then
  echo "== building $fuzzer"
  # shellcheck disable=SC2046
  clang++-14 -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I. -Iinclude test/fuzz/bnorm_fuzz.cc "$build_dir/lib/libbnorm.a" \
    $(pkg-config --libs libhwy tbb) -lpthread -o "$fuzzer"
fi

mkdir -p "$build_dir/corpus" "$build_dir/artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(-seed="$FUZZ_SEED")
echo "== fuzzing for ${seconds} s (one process; new inputs go to $build_dir/corpus)"
# The full log goes to last_run.log; the terminal gets it without the NEW/REDUCE lines.
set +e
"$fuzzer" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len=512 \
  -print_final_stats=1 -artifact_prefix="$build_dir/artifacts/" "${seed_args[@]}" "$@" \
  "$build_dir/corpus" test/fuzz/corpus 2>&1 | tee "$build_dir/last_run.log" |
  grep --line-buffered -v -E '^#[0-9]+.*(NEW|REDUCE) '
status=${PIPESTATUS[0]}
set -e
executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$build_dir/last_run.log" | tail -1)
echo "== bnorm_fuzz: exit status $status, ${executions:-?} executions in ${seconds} s" \
     "(log: $build_dir/last_run.log)"
exit "$status"
