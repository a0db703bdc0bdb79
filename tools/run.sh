#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (as root, or with sudo): installs the
# Debian packages bnorm needs if missing, configures and builds, then runs
#   bench [ARGS]  the throughput summary (`bnorm bench` on the built-in shapes)
#   test  [ARGS]  the whole test suite, ending with a line "N passed, N failed"
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail

cd "$(dirname "$0")/.."
mode="${1:-}"
[ $# -gt 0 ] && shift
build_dir="${BNORM_BUILD_DIR:-build}"

packages=(g++ pkg-config cmake meson ninja-build python3
          libhwy-dev libtbb-dev doctest-dev libbenchmark-dev)

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "== installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  if [ ! -f "$build_dir/build.ninja" ]; then
    meson setup "$build_dir" --buildtype=release
  fi
  ninja -C "$build_dir"
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
    build
    status=0
    meson test -C "$build_dir" --print-errorlogs --num-processes 1 "$@" || status=$?
    python3 - "$build_dir/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = 0
for line in open(sys.argv[1]):
    result = json.loads(line)["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result != "SKIP":
        failed += 1
print(f"{passed} passed, {failed} failed")
PY
    exit $status
    ;;
  *)
    echo "usage: tools/run.sh bench [bnorm bench options] | test [meson test options]" >&2
    exit 2
    ;;
esac
