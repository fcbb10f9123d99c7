#!/usr/bin/env bash
# Installs every build, test and tooling dependency of catserve that is missing.
# Idempotent: a second run installs nothing and takes seconds.
#   deploy/install-deps.sh            build + test dependencies (Debian packages, small PyPI set)
#   deploy/install-deps.sh --torch    also PyTorch, for tools/ (fixtures, training); not needed by tests
#   deploy/install-deps.sh --bench    also matplotlib, for tools/bench/loadgen.py --plot; not needed by tests
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
