#!/usr/bin/env bash
# A study's generators on a lent GPU, all regimes at once (the step is launch-bound, so they share the GPU well):
#   bash benchmarks/gpu_fits.sh RECIPE DATA_ROOT OUT_DIR "25:0 25:1 25:2" [--set FIELD=VALUE ...]
# Each regime PC:SEED is fitted as `experiment` would name it (<recipe name>-<PC>pc-s<SEED>, data.subset.per_class=PC,
# data.subset.seed=SEED); extra arguments go to every `synthaug fit`. The finished run directories (checkpoints left out)
# come back as OUT_DIR/runs.tar.part-?? (15 MiB pieces: `cat runs.tar.part-* | tar -x -C ../study-runs`).
# The unlabeled study (reports/bloodmnist-unlabeled) used it with recipes/bloodmnist-unlabeled.yaml.
set -uo pipefail
RECIPE=${1:?}; DATA_ROOT=${2:?}; OUT_DIR=${3:?}; REGIMES=${4:?}; shift 4; LIMIT=${GPU_FIT_LIMIT_S:-300}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
NAME=$(python3 -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$RECIPE")
RUNS=$(mktemp -d); mkdir -p "$OUT_DIR"
for regime in $REGIMES; do
  pc=${regime%%:*}; seed=${regime##*:}; name=$NAME-${pc}pc-s$seed
  timeout "$LIMIT" python3 -m synthaug fit "$RECIPE" --data-root "$DATA_ROOT" --no-progress \
    --set output_dir="$RUNS" --set name="$name" --set data.subset.per_class="$pc" --set data.subset.seed="$seed" "$@" \
    > "$OUT_DIR/fits.log.$name" 2>&1 &
done
wait
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
finished=()
for run in "$RUNS"/*/; do
  name=$(basename "$run"); tail -n 2 "$OUT_DIR/fits.log.$name"
  [ -n "$(ls "$run"/models/*/model_index.json 2>/dev/null)" ] && finished+=("$name")
done
cat "$OUT_DIR"/fits.log.* > "$OUT_DIR/fits.log"; rm -f "$OUT_DIR"/fits.log.*
tar -C "$RUNS" --exclude=checkpoints -cf - "${finished[@]}" | split -b 15M - "$OUT_DIR/runs.tar.part-"
ls -la "$OUT_DIR"
