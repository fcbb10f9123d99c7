#!/usr/bin/env bash
# Regenerates deploy/manifests/*.yaml: helm/catserve rendered with its default values by Helm's
# template engine (the helm-python-sdk package, see tests/deploy/render_chart.py; with a helm
# binary at hand `helm template catserve helm/catserve` gives the same objects).
# Apply with: kubectl apply -n <namespace> -f deploy/manifests/
# tests/deploy/check_chart.py fails when these files are stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 tests/deploy/render_chart.py --out deploy/manifests
ls deploy/manifests/*.yaml
