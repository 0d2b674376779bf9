#!/usr/bin/env bash
# The cross-site study's generator-size point (after scale.sh): A's generator g0 (train.seed 0) 4x wider in parameters
# (block_out_channels [64, 128, 128], about 4.4 M against the studies' 1.1 M [32, 64, 64]) for 1,000 steps of batch 32,
# the length of scale.sh's shortest 1.1 M point, so the two differ by width alone; drawn, audited, released and used by
# B as scale.sh does. One background job on the 2-core CPU (OMP_NUM_THREADS=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
name=bloodmnist-site-a-g0-wide-steps1000 run=$OUT/bloodmnist-site-a-g0-wide-steps1000 release=$OUT/releases/g0-wide-steps1000
synthaug fit recipes/bloodmnist-site-a.yaml --set train.seed=0 --set train.steps=1000 --set 'model.block_out_channels=[64, 128, 128]' \
  --set name=$name --no-progress --wait
synthaug generate --run "$run" --per-class 250 --no-progress
[ -f "$run/synthetic/audit.json" ] || synthaug audit --run "$run" --no-progress
[ -d "$release" ] || synthaug release --synthetic "$run/synthetic" --out "$release" --teacher --no-progress
synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release=$release \
  --set 'evaluate.arms=[real+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' \
  --out reports/cross-site/width-steps1000 --cache $OUT/cache --no-progress --wait
python benchmarks/cross_site.py --scale reports/cross-site/scale-steps1000/results.json reports/cross-site/width-steps1000/results.json
