#!/usr/bin/env bash
# Installs every build, test and tooling dependency of catserve that is missing.
# Idempotent: a second run installs nothing and takes seconds.
#   deploy/install-deps.sh            build + test dependencies (Debian packages, small PyPI set)
#   deploy/install-deps.sh --torch    also PyTorch, for tools/ (fixtures, training); not needed by tests
#   deploy/install-deps.sh --bench    also matplotlib, for tools/bench/loadgen.py --plot; not needed by tests
# Where the CUDA Toolkit is found (nvcc on PATH or in /usr/local/cuda), it also unpacks FlashInfer's
# CUDA headers from the pinned flashinfer-python wheel for the CUDA backend's decode attention
# (engine/cuda/CMakeLists.txt finds them there); nothing is downloaded at build time.
set -euo pipefail

want_torch=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --torch) want_torch=1 ;;
    --bench) want_bench=1 ;;
    *) echo "usage: $0 [--torch] [--bench]" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

debs=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libmicrohttpd-dev libgnutls28-dev nlohmann-json3-dev prometheus-cpp-dev libsentencepiece-dev sentencepiece
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-dev
  prometheus openssl curl python3 python3-pip python3-venv
)
missing=()
for p in "${debs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: Debian packages already installed"
fi

# Python packages for the end-to-end tests and tools, pinned (the versions the test suite last
# passed with). A pyenv or venv python is used as found; Debian's system python refuses global pip
# installs, so fall back to --break-system-packages.
PY=${PYTHON:-python3}
pip_pkgs=(numpy==2.4.6 safetensors==0.8.0 sentencepiece==0.2.3 grpcio==1.85.4 grpcio-tools==1.85.4
          protobuf==7.36.2 pytest==9.2.0 jsonschema==4.26.0 kubernetes-validate==1.37.0
          pyyaml==6.0.3 helm-python-sdk==0.2.2 openai==1.109.1)
if [ "$want_torch" -eq 1 ]; then pip_pkgs+=(torch==2.15.0); fi
if [ "$want_bench" -eq 1 ]; then pip_pkgs+=(matplotlib==3.11.2); fi
need_pip=()
for p in "${pip_pkgs[@]}"; do
  # Installed at that version? (by distribution name, whatever the module is called)
  if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('${p%%==*}').split('+')[0] != '${p#*==}')" \
      >/dev/null 2>&1; then
    need_pip+=("$p")
  fi
done
if [ "${#need_pip[@]}" -gt 0 ]; then
  echo "install-deps: installing Python packages: ${need_pip[*]}"
  if ! "$PY" -m pip install -q "${need_pip[@]}" 2>/dev/null; then
    "$PY" -m pip install -q --break-system-packages "${need_pip[@]}"
  fi
else
  echo "install-deps: Python packages already installed"
fi

# FlashInfer's header templates (Apache-2.0) for CUDA builds: the wheel's include/ and the CCCL it
# was written against, unpacked once into $CATSERVE_DEPS_DIR (the folder CMake's
# CATSERVE_FLASHINFER_DIR defaults to). The wheel is checked against its pinned sha256.
flashinfer_version=0.7.4
flashinfer_sha256=a051a62e09a2738e8b0de47a1944fd2f0f3eff01b728b662141ea660cb09dd32
deps_dir=${CATSERVE_DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/catserve}
flashinfer_dir="$deps_dir/flashinfer"
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  if [ "$(cat "$flashinfer_dir/VERSION" 2>/dev/null)" = "$flashinfer_version" ]; then
    echo "install-deps: FlashInfer $flashinfer_version headers already unpacked"
  else
    echo "install-deps: unpacking FlashInfer $flashinfer_version headers into $flashinfer_dir"
    wheels=$(mktemp -d)
    "$PY" -m pip download -q --no-deps "flashinfer-python==$flashinfer_version" -d "$wheels"
    wheel=$(ls "$wheels"/flashinfer_python-"$flashinfer_version"-*.whl)
    echo "$flashinfer_sha256  $wheel" | sha256sum -c --quiet -
    rm -rf "$flashinfer_dir"
    mkdir -p "$flashinfer_dir"
    "$PY" - "$wheel" "$flashinfer_dir" <<'PY'
import pathlib, sys, zipfile
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefixes = ("flashinfer/data/include/", "flashinfer/data/cccl/")
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        for prefix in prefixes:
            if name.startswith(prefix) and not name.endswith("/"):
                target = dest / prefix.split("/")[2] / name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    # The licence travels with the headers.
    licence = "flashinfer_python-" + wheel.split("flashinfer_python-")[1].split("-")[0] + \
        ".dist-info/licenses/LICENSE"
    (dest / "LICENSE").write_bytes(z.read(licence))
PY
    rm -rf "$wheels"
    echo "$flashinfer_version" > "$flashinfer_dir/VERSION"
  fi
fi
