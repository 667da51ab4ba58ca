#!/usr/bin/env bash
# One GPU session: install, then the parts named (default: tests scan step). Results go to $OUT
# (the device tool brings them back); bench results also to tests/bench/results/. tune.json stays
# in $OUT: a round worth keeping goes to tests/bench/results/step-tune-<gpu>-round<N>.json by hand.
# Usage (repository root):
#   WORLDSSM_GIT_SHA=$(git rev-parse HEAD) OUT=/tmp/out bash tests/bench/gpu_session.sh [tests] [scan] [step|step-quick] [tune]
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/worldssm-out}
mkdir -p "$OUT" tests/bench/results
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
parts=${*:-tests scan step}
for part in $parts; do
  case $part in
    tests) timeout 240 python3 -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tee "$OUT/pytest-kernels.log" | tail -15 ;;
    scan) timeout 200 python3 -m worldssm.bench.scan --out "$OUT" 2>&1 | tee "$OUT/bench-scan.log" | grep -v "^|---" | tail -12 ;;
    step) timeout 480 python3 -m worldssm.bench.step --out "$OUT" 2>&1 | tee "$OUT/bench-step.log" | grep -v "^|---" | tail -32 ;;
    step-quick) timeout 240 python3 -m worldssm.bench.step --out "$OUT" --no-compile --no-world-model 2>&1 | tee "$OUT/bench-step.log" | tail -24 ;;
    tune) timeout 480 python3 tests/bench/tune_step.py --out "$OUT" 2>&1 | tee "$OUT/tune-step.log" | tail -24 ;;
  esac
done
cp "$OUT"/step-*.json "$OUT"/scan-*.json tests/bench/results/ 2>/dev/null
ls "$OUT"
