#!/usr/bin/env bash
# Sets up ./.venv (scripts/setup_venv.sh) and trains: examples/dqn_hrm.py on its default (cpu)
# preset, FourRoomsDoors, Carry Z. Extra arguments go to the script (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
    if [ "$arg" = "-h" ] || [ "$arg" = "--help" ]; then  # help first, before installing anything
        if .venv/bin/python -c "import hrm_torchrl" 2>/dev/null; then
            exec .venv/bin/python examples/dqn_hrm.py --help
        fi
        echo "usage: bash scripts/train.sh [FLAG ...]"
        echo "Sets up ./.venv (scripts/setup_venv.sh, ~1 minute), then trains with"
        echo "examples/dqn_hrm.py FLAG ...; its flags are listed here once ./.venv exists."
        exit 0
    fi
done
bash scripts/setup_venv.sh
exec .venv/bin/python examples/dqn_hrm.py "$@"
