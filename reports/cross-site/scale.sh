#!/usr/bin/env bash
# The cross-site study's generator-compute curve (after study.sh): A's generator g0 (train.seed 0, the 1.1 M UNet,
# batch 32) fitted for 1,000 and 2,000 steps beside study.sh's 4,000, each drawn, audited and released the same way,
# then B's release arms on the same 10 balanced subsets. B's baselines and references come from study.sh's cache.
# Background jobs on a 2-core CPU: OMP_NUM_THREADS=1, one per length.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
length() {
  local n=$1 name=bloodmnist-site-a-g0-steps$1 run=$OUT/bloodmnist-site-a-g0-steps$1 release=$OUT/releases/g0-steps$1
  synthaug fit recipes/bloodmnist-site-a.yaml --set train.seed=0 --set train.steps=$n --set name=$name --no-progress --wait
  synthaug generate --run "$run" --per-class 250 --no-progress
  [ -f "$run/synthetic/audit.json" ] || synthaug audit --run "$run" --no-progress
  [ -d "$release" ] || synthaug release --synthetic "$run/synthetic" --out "$release" --teacher --no-progress
  synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release=$release \
    --set 'evaluate.arms=[real+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' \
    --out reports/cross-site/scale-steps$n --cache $OUT/cache --no-progress --wait
}
length 1000 & length 2000 &
wait
python benchmarks/cross_site.py --scale reports/cross-site/scale-steps1000/results.json \
  reports/cross-site/scale-steps2000/results.json reports/cross-site/release-g0/results.json
