#!/usr/bin/env bash
# benchmarks/accuracy.py on one GPU, one command: the four families train in four processes at once
# (they share the GPU; each is one launch with its seeds on the replica axis), then one report over
# them (`accuracy.py --report-only`). The same runs as on a CPU, other hardware: numbers agree to
# float rounding, not bit for bit. Not yet run on a GPU (prepared in a session whose GPU loan was
# withdrawn before its first call): the first run there checks it.
#
#   bash benchmarks/gpu_accuracy.sh                 # writes benchmarks/ACCURACY.md, ...json, ...png
#   OUT=/some/dir bash benchmarks/gpu_accuracy.sh   # writes there instead
#
# Also writes accuracy_runs.tgz (every run's metrics, configs and logs, no checkpoints) and
# gpu_accuracy.log. Overrides: FAMILIES ("domain function scene task"), WORKDIR
# (/tmp/accuracy_gpu), SEEDS (0,1,2), ROUNDS (20), LIMIT_S (hard stop per family, 480), PYTHON.
# A rerun with the same WORKDIR resumes finished runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-benchmarks}"
work="${WORKDIR:-/tmp/accuracy_gpu}"
py="${PYTHON:-python3}"
mkdir -p "$out_dir" "$work"
export XLA_PYTHON_CLIENT_PREALLOCATE=false # four processes share the card
log="$out_dir/gpu_accuracy.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"
} 2>&1 | tee "$log"
families="${FAMILIES:-domain function scene task}"
seeds="${SEEDS:-0,1,2}"
rounds="${ROUNDS:-20}"
start=$(date +%s)
for family in $families; do
  timeout "${LIMIT_S:-480}" "$py" -m benchmarks.accuracy --families "$family" \
    --seeds "$seeds" --rounds "$rounds" --workdir "$work" \
    --out "$work/report_$family" >"$work/$family.log" 2>&1 &
done
status=0
for job in $(jobs -p); do wait "$job" || status=$?; done
echo "families trained in $(($(date +%s) - start)) s (exit $status)" | tee -a "$log"
for family in $families; do # the end of each log, progress bars as lines
  echo "== $family" >>"$log"
  tr '\r' '\n' <"$work/$family.log" | grep -v 'step/s' | tail -n 15 >>"$log"
done
"$py" -m benchmarks.accuracy --report-only --families "${families// /,}" \
  --seeds "$seeds" --rounds "$rounds" --workdir "$work" --out "$out_dir" \
  >>"$log" 2>&1 || status=$?
tar czf "$out_dir/accuracy_runs.tgz" --exclude=checkpoints -C "$work" . || true
tail -n 60 "$log"
exit "$status"
