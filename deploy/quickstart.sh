#!/usr/bin/env bash
# The README's serve command: installs what is missing, builds catserve and catserve-cli, and
# serves the shipped model in the foreground (Ctrl-C drains and stops it).
#   deploy/quickstart.sh                      serve models/cat-small-en on :50051 (metrics :8000)
#   deploy/quickstart.sh --tiers=fast=16 ...  extra catserve flags are passed through
# Build directory: $CATSERVE_BUILD_DIR (default build/, shared with deploy/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
build=${CATSERVE_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target catserve catserve-cli

model=models/cat-small-en
if [ ! -f "$model/config.json" ]; then
  echo "quickstart: $model is not there yet (the trained model has not landed);" \
       "serving the tiny test model tests/fixtures/tiny instead (its output is noise)"
  model=tests/fixtures/tiny
fi
cat <<MSG
quickstart: serving $model with $build/server/catserve
quickstart: in another terminal, try:
  $build/server/catserve-cli generate --addr=localhost:50051 --prompt="Once upon a time" --tier=quality --max_tokens=64
  $build/server/catserve-cli info --addr=localhost:50051
  curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 32, "tier": "quality"}'
  curl -s localhost:8000/metrics | grep ^catserve_
MSG
exec "$build/server/catserve" --model_dir="$model" "$@"
