#!/usr/bin/env bash
# The pool generators of reports/bloodmnist-unlabeled on a lent GPU, all subsets at once (the step is launch-bound):
#   bash benchmarks/gpu_unlabeled_fits.sh DATA_ROOT OUT_DIR "25:0 25:1 25:2"
# Each finished run directory comes back as OUT_DIR/<run>.tar (models, samples, metrics, classes.json).
set -uo pipefail
DATA_ROOT=${1:?}; OUT_DIR=${2:?}; REGIMES=${3:-"25:0 25:1 25:2"}; LIMIT=${GPU_FIT_LIMIT_S:-300}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
RUNS=$(mktemp -d); mkdir -p "$OUT_DIR"
for regime in $REGIMES; do
  pc=${regime%%:*}; seed=${regime##*:}; name=bloodmnist-unlabeled-${pc}pc-s$seed
  timeout "$LIMIT" python3 -m synthaug fit recipes/bloodmnist-unlabeled.yaml --data-root "$DATA_ROOT" --no-progress \
    --set output_dir="$RUNS" --set name="$name" --set data.subset.per_class="$pc" --set data.subset.seed="$seed" \
    > "$OUT_DIR/$name.log" 2>&1 &
done
wait
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
for run in "$RUNS"/*/; do
  name=$(basename "$run"); tail -n 3 "$OUT_DIR/$name.log"
  [ -f "$run/models/all/model_index.json" ] && tar -C "$RUNS" --exclude=checkpoints -cf "$OUT_DIR/$name.tar" "$name"
done
ls -la "$OUT_DIR"
