#!/usr/bin/env bash
# Prepares the GPU proof of the CUDA backend (docs/CUDA.md, "The GPU proof") on a machine without
# a GPU, so that a GPU machine without our build dependencies runs it in two commands. Builds the CUDA programs and the
# daemon in BUILD_DIR (configured with CATSERVE_CUDA=ON), bundles them with the libraries a bare
# GPU machine lacks (../shared/tools/gpu-bundle.sh, or $GPU_BUNDLE_SCRIPT), and adds what the
# proof needs beside the bundle: the Python gRPC stubs for tools/bench/loadgen.py (the GPU image
# has grpcio and protobuf but not grpc_tools), the daemon binary's compiled-in path for
# server_tests, and tools/gpu/cuda_proof.sh.
#
#   tools/gpu/prepare_cuda_proof.sh [BUILD_DIR]      (default: build)
#
# Then copy the checkout with .gpu-bundle/ to the GPU machine and run there, from its root,
# with OUT a folder for the results:
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT tests
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT serve
#   bash .gpu-bundle/run.sh $OUT bash .gpu-bundle/cuda_proof.sh $OUT compare
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
build=${1:-build}
bundler=${GPU_BUNDLE_SCRIPT:-$root/../shared/tools/gpu-bundle.sh}
if ! grep -q '^CATSERVE_CUDA:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "$build is not a CMake build with CATSERVE_CUDA=ON" >&2
  exit 1
fi
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu-bundle/' "$exclude" 2>/dev/null || echo '/.gpu-bundle/' >> "$exclude"

GPU_BUNDLE_EXTRA="server/catserve tests/server/server_tests benchmarks/cuda_attention_bench" bash "$bundler" "$build" .gpu-bundle

python3 - "$root/proto" .gpu-bundle/stubs <<'PY'
import pathlib, sys
from grpc_tools import protoc
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
protos = sorted(str(p) for p in (root / "catserve" / "v1").glob("*.proto"))
if protoc.main(["protoc", f"-I{root}", f"--python_out={out}", f"--grpc_python_out={out}"] + protos):
    sys.exit("grpc_tools.protoc failed")
# The stubs refuse a grpcio older than this machine's grpcio-tools (seen: the GPU image's 1.84
# against 1.85 here). They call nothing newer than a unary-stream stub, so drop that guard.
for f in (out / "catserve" / "v1").glob("*_pb2_grpc.py"):
    text = f.read_text()
    if "if _version_not_supported:" not in text:
        sys.exit(f"{f}: the grpcio version guard changed; update prepare_cuda_proof.sh")
    f.write_text(text.replace("if _version_not_supported:", "if False:  # see prepare_cuda_proof.sh"))
PY
realpath "$build/server/catserve" > .gpu-bundle/server_bin_path
# The one package the authors' generator needs beyond the GPU image's PyTorch (cuda_proof.sh
# compare); pure Python, installed there from this wheel without a network.
python3 -m pip download -q --no-deps liger-kernel==0.8.5 -d .gpu-bundle/wheels
cp tools/gpu/cuda_proof.sh .gpu-bundle/
du -sh .gpu-bundle
