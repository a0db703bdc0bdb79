#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (as root, or with sudo): installs the
# Debian packages bnorm needs if missing, configures and builds, then runs
#   bench [ARGS]  the throughput summary (`bnorm bench` on the built-in shapes)
#   test  [ARGS]  the whole test suite in every lane below, ending with a line
#                 "N passed, N failed" that counts each test of each lane (ARGS go to
#                 every lane's `meson test`)
# Idempotent: a second run only rebuilds what changed.
#
# Test lanes. By default (and in CI) all of them run; BNORM_LANES picks a subset, e.g.
# BNORM_LANES="x86 aarch64" (BNORM_LANES=all is the default set):
#   x86           build/ (BNORM_BUILD_DIR), g++, release
#   x86-asan      build-asan/, AddressSanitizer + UndefinedBehaviorSanitizer, halting
#                 on the first finding
#   aarch64       build-aarch64/, cross g++ (cross/aarch64-linux-gnu.ini), the suite
#                 under qemu-aarch64 once per emulated CPU: cortex-a72 (NEON), a64fx
#                 (SVE 512-bit), max (SVE2 512-bit), max with 256-bit SVE (SVE_256),
#                 max with 128-bit SVE (SVE2_128); each asserts that target dispatched;
#                 BNORM_TEST_QUICK=1 (smaller shape sets in the tests heavy under qemu)
#   aarch64-asan  build-aarch64-asan/, ASan + UBSan under qemu on one CPU
#                 (BNORM_ASAN_CPU, default cortex-a72), BNORM_TEST_QUICK=1
#   fuzz          test/fuzz/run_fuzz.sh: libFuzzer (clang-14, ASan + UBSan) on the C
#                 API for BNORM_FUZZ_SECONDS (default 60) seconds
#   agreement     tools/merge_check.py over the `bnorm check` reports of x86 and every
#                 emulated CPU: build-cross-isa/agreement.md (see docs/cross-isa.md)
# A lane that fails to configure or build counts as one failed test per run it would
# have made. The summary gives each lane's seconds (build included) and the total.
# The Arm lanes install g++-aarch64-linux-gnu, qemu-user and the arm64
# multiarch libraries (dpkg --add-architecture arm64) when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-}"
[ $# -gt 0 ] && shift
build_dir="${BNORM_BUILD_DIR:-build}"
jobs="${BNORM_JOBS:-$(nproc)}"

packages=(g++ pkg-config cmake meson ninja-build python3
          libhwy-dev libtbb-dev doctest-dev libbenchmark-dev
          libopenmpi-dev openmpi-bin)
arm_packages=(g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libtbb-dev:arm64
              libasan8:arm64 libubsan1:arm64)

as_root() {
  if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi
}

# Prints the packages of "$@" that are not installed.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" </dev/null
}

install_packages() {
  local missing
  missing=$(missing_packages "${packages[@]}")
  [ -z "$missing" ] && return
  echo "== installing: $(echo $missing)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  apt_install $missing
}

# The cross toolchain, qemu-user and the arm64 libraries, through Debian multiarch.
install_arm_packages() {
  local missing
  missing=$(missing_packages "${arm_packages[@]}")
  [ -z "$missing" ] && return
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "== dpkg --add-architecture arm64"
    as_root dpkg --add-architecture arm64
  fi
  echo "== installing: $(echo $missing)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
  apt_install $missing
}

build() {
  if [ ! -f "$build_dir/build.ninja" ]; then
    meson setup "$build_dir" --buildtype=release
  fi
  ninja -C "$build_dir"
}

# Configures DIR with the meson options that follow (setup the first time, configure
# after, so that a directory made with other options is brought in line), then builds.
# A leading "--cross-file FILE" is used by the setup only.
configure_and_build() {
  local dir="$1" setup_only=()
  shift
  if [ "${1:-}" = "--cross-file" ]; then
    setup_only=("$1" "$2")
    shift 2
  fi
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null || return 1
  else
    meson setup "$dir" "${setup_only[@]}" "$@" || return 1
  fi
  ninja -C "$dir" -j "$jobs"
}

# ---------------------------------------------------------------------------------
# Test lanes. Each run of meson test appends "lane<TAB>test<TAB>result" lines to
# $results; a run that cannot happen appends one FAIL line.

results=""
lane_times=()

# Records the results of meson's JSON log $2 under lane $1 (or one failure if absent).
record_log() {
  python3 - "$1" "$2" "$results" <<'PY'
import json, sys
lane, log, out = sys.argv[1:]
lines = []
try:
    for line in open(log):
        r = json.loads(line)
        lines.append(f"{lane}\t{r['name']}\t{r['result']}\n")
except OSError:
    lines.append(f"{lane}\tmeson test (no log)\tFAIL\n")
open(out, "a").write("".join(lines))
PY
}

record_failure() {  # lane, what
  printf '%s\t%s\tFAIL\n' "$1" "$2" >>"$results"
}

# Runs the suite of build dir $2 as lane $1 with the environment assignments and meson
# test options that follow "--": run_suite LANE DIR [VAR=VALUE ...] -- [OPTIONS ...]
run_suite() {
  local lane="$1" dir="$2" logbase
  shift 2
  local env_vars=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do env_vars+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  logbase="lane-$(echo "$lane" | tr -c 'A-Za-z0-9_.\n-' '-')"
  rm -f "$dir/meson-logs/$logbase.json"
  echo "== lane $lane: meson test -C $dir ${env_vars[*]}"
  local TIMEFORMAT="== lane $lane: meson test took %0R s (CPU: %0U s user, %0S s system)"
  time env "${env_vars[@]}" meson test -C "$dir" --no-rebuild --print-errorlogs \
    --logbase "$logbase" "$@" "${extra_args[@]}" || true
  record_log "$lane" "$dir/meson-logs/$logbase.json"
}

lane_start() {
  lane_t0=$SECONDS
  echo
  echo "======== lane $1"
}

lane_end() {
  lane_times+=("$1"$'\t'"$((SECONDS - lane_t0))")
}

want_lane() {
  local lanes="${BNORM_LANES:-all}"
  [ "$lanes" = all ] && lanes="x86 x86-asan aarch64 aarch64-asan agreement fuzz"
  [[ " $lanes " == *" $1 "* ]]
}

# The emulated CPUs: label, QEMU_CPU, expected best target, expected supported
# targets, SVE vector length in bits (HIGHWAY-NOTES.md), and the targets the kernel
# tests and `bnorm check` cover there. Emulated SVE is slow at 512 bits (the suite
# costs some 300 CPU seconds per target there, 190 at 256 bits, 40 at 128 bits), so
# each target runs on one CPU, the vector-length-agnostic SVE and SVE2 at more than
# one length: NEON (the same on every CPU), SVE at 512 and 128 bits, SVE2 at 512, 256
# and 128 bits, SVE_256, SVE2_128. BNORM_ARM_ALL_TARGETS=1 covers every supported
# target on every CPU (14 runs, not 8). Every qemu lane also sets BNORM_TEST_QUICK=1:
# the tests that are heavy under emulation (slice, determinism, alloc, concurrency,
# threads) run smaller shape sets of the same work plans and edge cases.
arm_cpus=(
  "cortex-a72|cortex-a72|NEON|NEON|0|NEON"
  "a64fx|a64fx|SVE|SVE NEON|512|SVE"
  "max|max|SVE2|SVE2 SVE NEON|512|SVE2"
  "max-sve256|max,sve-default-vector-length=32|SVE_256|SVE_256 SVE2 SVE NEON|256|SVE_256 SVE2"
  "max-sve128|max,sve-default-vector-length=16|SVE2_128|SVE2_128 SVE2 SVE NEON|128|SVE2_128 SVE2 SVE"
)

# The environment of the lane for emulated CPU spec $1, as VAR=VALUE|VAR=VALUE...
arm_cpu_env() {
  local label qemu_cpu best supported bits cover
  IFS='|' read -r label qemu_cpu best supported bits cover <<<"$1"
  [ "${BNORM_ARM_ALL_TARGETS:-0}" = 1 ] && cover="$supported"
  echo "QEMU_CPU=$qemu_cpu|BNORM_EXPECT_TARGET=$best|BNORM_EXPECT_SUPPORTED=$supported|BNORM_EXPECT_SVE_BITS=$bits|BNORM_TEST_TARGETS=$cover|BNORM_CHECK_TARGETS=$cover|BNORM_TEST_QUICK=1"
}

sanitizer_options=(-Db_sanitize=address,undefined -Dbuildtype=debugoptimized
                   -Dbenchmarks=false -Ddnnl=disabled)
sanitizer_flags="-fno-sanitize-recover=all"
# g++ 12 for aarch64 dies (internal compiler error in asan_expand_mark_ifn) on SVE
# vectors in scope with ASan's use-after-scope poisoning: leave that one check out.
arm_sanitizer_flags="$sanitizer_flags -fno-sanitize-address-use-after-scope"
# Halt on the first finding (UBSan would otherwise report and go on).
sanitizer_env=(ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1
               LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp:print_suppressions=0
               UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1)
cross_options=(--cross-file cross/aarch64-linux-gnu.ini)
agreement_dir=build-cross-isa

run_tests() {
  results=$(mktemp)
  local t_all=$SECONDS reports=() arm_ok=1

  if want_lane x86; then
    lane_start x86
    rm -f "$build_dir/tools/check.json" "$agreement_dir/x86-64.json"
    if build; then
      run_suite x86 "$build_dir" -- --num-processes 1
      if [ -f "$build_dir/tools/check.json" ]; then
        mkdir -p "$agreement_dir"
        cp "$build_dir/tools/check.json" "$agreement_dir/x86-64.json"
        reports+=("x86-64=$agreement_dir/x86-64.json")
      fi
    else
      record_failure x86 "build"
    fi
    lane_end x86
  fi

  if want_lane x86-asan; then
    lane_start x86-asan
    if configure_and_build build-asan "${sanitizer_options[@]}" \
        -Dc_args="$sanitizer_flags" -Dcpp_args="$sanitizer_flags"; then
      run_suite x86-asan build-asan "${sanitizer_env[@]}" -- --num-processes 2 \
        --timeout-multiplier 3
    else
      record_failure x86-asan "build"
    fi
    lane_end x86-asan
  fi

  if want_lane aarch64 || want_lane aarch64-asan; then
    lane_start "arm64 packages"
    install_arm_packages || { echo "== installing the arm64 packages failed"; arm_ok=0; }
    lane_end "arm64 packages"
  fi

  if want_lane aarch64; then
    lane_start "aarch64 build"
    local built=0
    [ $arm_ok = 1 ] && configure_and_build build-aarch64 "${cross_options[@]}" \
      -Dbuildtype=release -Dbenchmarks=false -Ddnnl=disabled && built=1
    lane_end "aarch64 build"
    mkdir -p "$agreement_dir"
    local cpu label vars
    for cpu in "${arm_cpus[@]}"; do
      label="${cpu%%|*}"
      lane_start "aarch64/$label"
      if [ $built = 1 ]; then
        IFS='|' read -r -a vars <<<"$(arm_cpu_env "$cpu")"
        rm -f build-aarch64/tools/check.json "$agreement_dir/$label.json"
        run_suite "aarch64/$label" build-aarch64 "${vars[@]}" -- --num-processes 2 \
          --timeout-multiplier 4
        if [ -f build-aarch64/tools/check.json ]; then
          mv build-aarch64/tools/check.json "$agreement_dir/$label.json"
          reports+=("$label=$agreement_dir/$label.json")
        fi
      else
        record_failure "aarch64/$label" "build"
      fi
      lane_end "aarch64/$label"
    done
  fi

  if want_lane aarch64-asan; then
    local asan_cpu="${BNORM_ASAN_CPU:-cortex-a72}" cpu_spec="" c vars
    for c in "${arm_cpus[@]}"; do [ "${c%%|*}" = "$asan_cpu" ] && cpu_spec="$c"; done
    lane_start "aarch64-asan/$asan_cpu"
    if [ -z "$cpu_spec" ]; then
      echo "== BNORM_ASAN_CPU=$asan_cpu is not one of the emulated CPUs"
      record_failure "aarch64-asan/$asan_cpu" "unknown CPU"
    elif [ $arm_ok = 1 ] && configure_and_build build-aarch64-asan "${cross_options[@]}" \
        "${sanitizer_options[@]}" -Dc_args="$arm_sanitizer_flags" \
        -Dcpp_args="$arm_sanitizer_flags"; then
      IFS='|' read -r -a vars <<<"$(arm_cpu_env "$cpu_spec")"
      # LeakSanitizer does not work under qemu-user.
      run_suite "aarch64-asan/$asan_cpu" build-aarch64-asan "${vars[@]}" \
        ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=0 \
        UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
        -- --num-processes 2 --timeout-multiplier 8
    else
      record_failure "aarch64-asan/$asan_cpu" "build"
    fi
    lane_end "aarch64-asan/$asan_cpu"
  fi

  if want_lane fuzz; then
    # libFuzzer (clang, ASan + UBSan) on the C API for a bounded time, from the seeds.
    lane_start fuzz
    if test/fuzz/run_fuzz.sh "${BNORM_FUZZ_SECONDS:-60}"; then
      printf 'fuzz\tlibFuzzer %ss\tOK\n' "${BNORM_FUZZ_SECONDS:-60}" >>"$results"
    else
      record_failure fuzz "libFuzzer ${BNORM_FUZZ_SECONDS:-60}s"
    fi
    lane_end fuzz
  fi

  # The reports exist only when the suites ran whole (meson test ARGS may select tests).
  if want_lane agreement && [ ${#extra_args[@]} -eq 0 ] && [ ${#reports[@]} -gt 0 ]; then
    lane_start agreement
    mkdir -p "$agreement_dir"
    local expected=0
    want_lane x86 && expected=$((expected + 1))
    want_lane aarch64 && expected=$((expected + ${#arm_cpus[@]}))
    if python3 tools/merge_check.py --out "$agreement_dir/agreement.md" "${reports[@]}" &&
        [ ${#reports[@]} -eq $expected ]; then
      printf 'agreement\tmerge_check (%d reports)\tOK\n' ${#reports[@]} >>"$results"
    else
      echo "== agreement: ${#reports[@]} of $expected reports, or out of tolerance"
      record_failure agreement "merge_check (${#reports[@]} of $expected reports)"
    fi
    cat "$agreement_dir/agreement.md"
    lane_end agreement
  fi

  echo
  echo "======== summary"
  python3 - "$results" "$((SECONDS - t_all))" "${lane_times[@]}" <<'PY'
import sys
results, total, *times = sys.argv[1:]
lanes = {}
for line in open(results):
    lane, test, result = line.rstrip("\n").split("\t")
    counts = lanes.setdefault(lane, [0, 0, 0, []])
    if result in ("OK", "EXPECTEDFAIL"):
        counts[0] += 1
    elif result == "SKIP":
        counts[2] += 1
    else:
        counts[1] += 1
        counts[3].append(f"{test} ({result})")
seconds = dict(t.split("\t") for t in times)
print(f"{'lane':28} {'passed':>6} {'failed':>6} {'skipped':>7} {'seconds':>7}")
for lane in dict.fromkeys(list(seconds) + list(lanes)):
    p, f, s, bad = lanes.get(lane, [0, 0, 0, []])
    print(f"{lane:28} {p:6} {f:6} {s:7} {seconds.get(lane, '-'):>7}")
    for b in bad:
        print(f"    failed: {b}")
print(f"{'total':28} {'':6} {'':6} {'':7} {total:>7}")
passed = sum(c[0] for c in lanes.values())
failed = sum(c[1] for c in lanes.values())
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
PY
}

case "$mode" in
  bench)
    install_packages
    # oneDNN is an optional peer, for bench only: `bnorm bench` times it beside bnorm
    # when the build found libdnnl-dev. If it cannot be installed, bench goes on without.
    dnnl_installed() {
      dpkg-query -W -f='${Status}' libdnnl-dev 2>/dev/null | grep -q "install ok installed"
    }
    if ! dnnl_installed; then
      echo "== installing the optional peer libdnnl-dev (oneDNN)"
      sudo=""
      [ "$(id -u)" -ne 0 ] && sudo="sudo"
      export DEBIAN_FRONTEND=noninteractive
      $sudo apt-get install -y -q --no-install-recommends libdnnl-dev ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends libdnnl-dev; } ||
        echo "== libdnnl-dev could not be installed: bench runs without oneDNN"
    fi
    build
    # A build dir configured before libdnnl-dev was there has no oneDNN: reconfigure.
    if dnnl_installed && ! "$build_dir/tools/bnorm" info | grep -q '^oneDNN: *[0-9]'; then
      echo "== reconfiguring $build_dir to pick up oneDNN"
      meson setup --reconfigure "$build_dir"
      ninja -C "$build_dir"
    fi
    exec "$build_dir/tools/bnorm" bench "$@"
    ;;
  test)
    install_packages
    extra_args=("$@")
    run_tests
    exit $?
    ;;
  *)
    echo "usage: tools/run.sh bench [bnorm bench options] | test [meson test options]" >&2
    exit 2
    ;;
esac
