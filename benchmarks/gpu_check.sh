#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a lent GPU machine, in one call of at most 8 minutes.
# It installs nothing from the network: the machine has torch; `bash ../shared/gpu/wheels.sh`,
# run beforehand on this side, puts the wheels it lacks in .whl/ (carry ".whl" to the machine).
#   bash benchmarks/gpu_check.sh [FLAGS of gpu_check.py]      # writes $OUT/gpu_check.{json,log}
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import torchrl, minihack" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
# SIGINT at the limit, so that a training run in progress saves before it is stopped
timeout -s INT 470 python3 benchmarks/gpu_check.py --device cuda --out "$OUT" "$@" 2>&1 \
    | tee "$OUT/gpu_check.log"
