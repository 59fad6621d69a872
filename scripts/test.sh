#!/usr/bin/env bash
# Sets up ./.venv (scripts/setup_venv.sh) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
