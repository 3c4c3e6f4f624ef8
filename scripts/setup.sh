#!/usr/bin/env bash
# Create .venv and install robustprec with its dev and fp8 extras. Idempotent: a second run only checks.
# On a machine without an NVIDIA GPU the CPU build of torch (torch==2.13.0) is installed first, so the
# project's torch range never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
quiet() { "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }; }  # pipefail keeps pip's status
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing CUDA torch" >&2
        quiet "${PIP[@]}" install "torch>=2.4,<2.15"
    else
        echo "setup: no GPU, installing CPU torch 2.13.0" >&2
        quiet "${PIP[@]}" install "torch==2.13.0"
    fi
fi
stamp=".venv/.robustprec-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing robustprec[dev,fp8] (editable)" >&2
    quiet "${PIP[@]}" install -e ".[dev,fp8]"
    echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2
