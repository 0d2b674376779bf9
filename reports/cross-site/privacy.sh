#!/usr/bin/env bash
# The cross-site study's utility-privacy point (after scale.sh's 1,000-step release): A's generator g0 fitted with
# DP-SGD (train.privacy, Opacus) at epsilon 10, delta 1e-5, for the same 1,000 steps of batch 32 as the non-private
# g0-steps1000, then drawn, audited, released and used by B exactly as scale.sh does. The non-private reference is the
# same length, so the table compares privacy at equal compute. Starts once scale.sh's 1,000-step report exists, so at
# most two jobs run at a time on the 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
while [ ! -f reports/cross-site/scale-steps1000/results.json ]; do sleep 30; done
eps=${EPSILON:-10}
name=bloodmnist-site-a-g0-steps1000-eps$eps run=$OUT/bloodmnist-site-a-g0-steps1000-eps$eps release=$OUT/releases/g0-steps1000-eps$eps
synthaug fit recipes/bloodmnist-site-a.yaml --set train.seed=0 --set train.steps=1000 --set "train.privacy={epsilon: $eps, delta: 1.0e-5, max_grad_norm: 1.0}" \
  --set name=$name --no-progress --wait
synthaug generate --run "$run" --per-class 250 --no-progress
[ -f "$run/synthetic/audit.json" ] || synthaug audit --run "$run" --no-progress
[ -d "$release" ] || synthaug release --synthetic "$run/synthetic" --out "$release" --teacher --no-progress
synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release=$release \
  --set 'evaluate.arms=[real+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' \
  --out reports/cross-site/privacy-eps$eps --cache $OUT/cache --no-progress --wait
