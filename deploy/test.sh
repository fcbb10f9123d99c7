#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test (CTest).
# Needs neither a GPU nor PyTorch. Build directory: $CATSERVE_BUILD_DIR (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
build=${CATSERVE_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900
