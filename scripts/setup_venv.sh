#!/usr/bin/env bash
# Creates or refreshes ./.venv with everything the package needs.
# torch==2.13.0 goes in first: it is the CPU build on disk here, and it keeps pip from pulling
# the registry's newest (multi-GB CUDA) torch when torchrl asks for "torch".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" "setuptools<81"
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
# ray: the optional extra behind --collector ray, which the tests exercise
"${PIP[@]}" --no-build-isolation -e ".[dev,ray]"
