#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tools/fuzz (their own build directory, clang, ASan + UBSan)
# and runs each for SECONDS, starting from its committed seed corpus (tools/fuzz/corpus/TARGET;
# new inputs go to a scratch directory, never into the repository).
#
#   tools/fuzz/run.sh SECONDS [TARGET...]    default: every *_fuzzer.cc
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_CXX (default clang++), FUZZ_JOBS
# (default 2), FUZZ_SKIP_BUILD=1 to use an existing build (what CTest does), FUZZ_RUNS to stop
# after that many executions instead of SECONDS. A crash, a broken FUZZ_CHECK, a leak, a timeout
# (10 s per input) or 2 GiB of RSS is a finding: its input is saved under
# $FUZZ_BUILD_DIR/artifacts/ and the script exits 1. One summary line per target goes to stdout.
set -euo pipefail

if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 SECONDS [TARGET...]" >&2
  exit 2
fi
seconds=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  cxx=${FUZZ_CXX:-clang++}
  if ! command -v "$cxx" >/dev/null; then
    echo "run.sh: $cxx not found; install clang and libclang-rt-dev (deploy/install-deps.sh)" >&2
    exit 2
  fi
  launcher=()
  if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
  generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  mkdir -p "$build"
  cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" \
    >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
  cmake --build "$build" -j"${FUZZ_JOBS:-2}" >&2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for source in "$here"/*_fuzzer.cc; do targets+=("$(basename "$source" .cc)"); done
fi

mkdir -p "$build/artifacts"
status=0
for target in "${targets[@]}"; do
  binary="$build/$target"
  seeds="$here/corpus/$target"
  if [ ! -x "$binary" ] || [ ! -d "$seeds" ]; then
    echo "run.sh: no binary $binary or no seed corpus $seeds" >&2
    exit 2
  fi
  scratch=$(mktemp -d)
  log="$build/$target.log"
  limit=(-max_total_time="$seconds")
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); fi
  set +e
  "$binary" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" "$scratch" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  rm -rf "$scratch"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  time_s=$(sed -n 's/^.*Done [0-9]* runs in \([0-9]*\) second.*$/\1/p' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "$target: ${execs:-?} executions in ${time_s:-$seconds} s, 0 findings"
  else
    echo "$target: FINDING (exit $rc) after ${execs:-?} executions; log $log, input under $build/artifacts/" 
    grep -E "ERROR|FUZZ_CHECK|SUMMARY|runtime error" "$log" | head -20
    status=1
  fi
done
exit $status
