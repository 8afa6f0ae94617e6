#!/usr/bin/env bash
# The GPU check, one command, at most 8 minutes on one GPU including compilation (H200: the
# budget below stops starting rows after 360 s of the run; `timeout` is the hard stop):
# ViLT-B/32 size (random weights), 384x640, B = 2, S = 8 local steps in segments of K = 4, the
# vmapped round against the sequential per-client loop at C = 1, 8, 32, 64, bf16 and float32,
# MFU from XLA's FLOP count, peak device memory, and peak memory against S (flat in segments).
#
#   bash benchmarks/gpu_check.sh                  # writes benchmarks/gpu_check.{json,txt}
#   OUT=/some/dir bash benchmarks/gpu_check.sh    # writes there instead
#   python -m benchmarks.gpu_check --size tiny    # the same script shrunk: a CPU smoke run
#
# The JSON is rewritten after every row, so a time limit keeps what was measured. It needs only
# jax, flax, optax and numpy. To commit it: copy gpu_check.json to
# benchmarks/results_gpu_check_<card>.json and run `python -m benchmarks.results_md`; if "loop"
# ever beats "vmap", revisit DEFAULT_STRATEGY["gpu"] in feddat_jax/fl/mesh.py.
# Overrides: LIMIT_S (hard stop, 470), BUDGET_S (no new row after, 360), PYTHON, and any
# benchmarks.gpu_check flag after the script name.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-benchmarks}"
mkdir -p "$out_dir"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout "${LIMIT_S:-470}" "$py" -m benchmarks.gpu_check --out "$out_dir" \
  --budget-s "${BUDGET_S:-360}" "$@" 2>&1 | tee "$out_dir/gpu_check.txt"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "gpu_check.py stopped early (exit $status); the rows measured are in $out_dir/gpu_check.json"
fi
exit "$status"
