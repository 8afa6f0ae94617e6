#!/usr/bin/env bash
# One command, under 8 minutes on one GPU: the FedDAT round benchmark at ViLT-B/32 size
# (random weights, batch 2, images padded to 384x640, text length 40, 100 answers), for the
# vmap / scan / loop strategies at cohort sizes 1, 4 and 16.
#
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results_gpu.{json,txt}
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # writes there instead
#
# The JSON is rewritten after every measured row, so if the time limit cuts the run short the
# rows measured so far are kept. Copy the printed table into benchmarks/RESULTS.md and, if the
# fastest strategy differs from DEFAULT_STRATEGY["gpu"] in feddat_jax/fl/mesh.py, update it.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-benchmarks}"
mkdir -p "$out_dir"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"
status=0
timeout "${LIMIT_S:-450}" python benchmarks/bench_round.py \
  --size base --image 384x640 --text-len 40 --answers 100 --batch 2 --steps "${STEPS:-2}" \
  --cohorts "${COHORTS:-1,4,16}" --strategies "${STRATEGIES:-vmap,scan,loop}" \
  --dtype "${DTYPE:-float32}" --repeats 3 --out "$out_dir/results_gpu.json" \
  2>&1 | tee "$out_dir/results_gpu.txt" || status=$?
if [ "$status" -ne 0 ]; then
  echo "bench_round.py stopped early (exit $status); partial rows are in $out_dir/results_gpu.json"
fi
exit "$status"
