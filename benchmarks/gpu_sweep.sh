#!/usr/bin/env bash
# One command, under 9 minutes on one GPU: the sweep benchmark's round part at ViLT-B/32 size
# (random weights, C = 5 clients per replica, batch 2, images padded to 384x640, text length 40,
# 100 answers, S = 2): R = 1, 4, 8 replicas in one program against R
# separate runs of the one-federation round, compile time apart.
#
#   bash benchmarks/gpu_sweep.sh                 # writes benchmarks/results_sweep_gpu.{json,txt}
#   OUT=/some/dir bash benchmarks/gpu_sweep.sh   # writes there instead
#
# Imports only jax, flax, optax, numpy and the project's model and round code. The JSON is
# rewritten after every row; --budget-s skips the rows that would start after 7 minutes, and the
# timeout stops the rest. To commit it: move the JSON to benchmarks/ and run
# `python -m benchmarks.results_md`.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-benchmarks}"
mkdir -p "$out_dir"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
timeout "${LIMIT_S:-520}" python -m benchmarks.sweep_speed --size base \
  --replicas "${REPLICAS:-1,4,8}" --cohort 5 --steps "${STEPS:-2}" \
  --rounds 5 --repeats 3 --dtype "${DTYPE:-float32}" --budget-s "${BUDGET_S:-420}" \
  --out "$out_dir/results_sweep_gpu.json" 2>&1 | tee "$out_dir/results_sweep_gpu.txt" || status=$?
if [ "$status" -ne 0 ]; then
  echo "benchmarks.sweep_speed stopped early (exit $status); partial rows are in $out_dir/results_sweep_gpu.json"
fi
exit "$status"
