#!/usr/bin/env bash
# The quickstart pipeline at reduced size, for byte-identity checks across refactors:
#   OMP_NUM_THREADS=1 bash benchmarks/reduced_pipeline.sh OUT [DATA_ROOT]   (then: python benchmarks/compare_runs.py BEFORE AFTER)
# Keep the thread count the same for both runs: it changes the order of float sums, so the bytes.
# fit (40 steps), generate from noise and variations, audit, evaluate (30 classifier steps, one seed).
set -euo pipefail
OUT=${1:?usage: reduced_pipeline.sh OUT [DATA_ROOT]}; DATA_ROOT=${2:-../shared/data/medmnist}
synthaug fit recipes/quickstart.yaml --data-root "$DATA_ROOT" --no-progress --set output_dir="$OUT" \
  --set train.steps=40 --set train.checkpoint_every=20 --set train.sample_every=20
synthaug generate --run "$OUT/quickstart" --per-class 16 --no-progress
synthaug generate --run "$OUT/quickstart" --from-real --per-real 1 --out "$OUT/quickstart/variations" --data-root "$DATA_ROOT" --no-progress
synthaug audit --run "$OUT/quickstart" --data-root "$DATA_ROOT" --no-progress
synthaug evaluate "$OUT/quickstart" --synthetic "$OUT/quickstart/variations" --data-root "$DATA_ROOT" --out "$OUT/report" --no-progress \
  --set evaluate.steps=30 --set evaluate.eval_every=10 --set 'evaluate.seeds=[0]' --set 'evaluate.arms=[real, real+classic, real+synthetic, real+replace]'
