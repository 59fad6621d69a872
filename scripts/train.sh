#!/usr/bin/env bash
# Sets up ./.venv (scripts/setup_venv.sh) and trains: examples/dqn_hrm.py on its default (cpu)
# preset, FourRoomsDoors, Carry Z. Extra arguments go to the script (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python examples/dqn_hrm.py "$@"
