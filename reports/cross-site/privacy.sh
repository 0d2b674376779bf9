#!/usr/bin/env bash
# The cross-site study's utility-privacy points (after scale.sh's 1,000-step release): A's generator g0 fitted with
# DP-SGD (train.privacy, Opacus) at epsilon $EPSILON (default 10; 3 for the second point), delta 1e-5, for the same
# 1,000 steps of batch 32 as the non-private g0-steps1000, then drawn, audited, released and used by B exactly as
# scale.sh does (release-chain.sh). The non-private reference is the same length, so the table compares privacy at
# equal compute. Starts once scale.sh's 1,000-step report exists, so that at most two jobs run at a time on the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
source reports/cross-site/release-chain.sh
while [ ! -f reports/cross-site/scale-steps1000/results.json ]; do sleep 30; done
eps=${EPSILON:-10}
release_chain bloodmnist-site-a-g0-steps1000-eps$eps privacy-eps$eps --set train.steps=1000 \
  --set "train.privacy={epsilon: $eps, delta: 1.0e-5, max_grad_norm: 1.0}"
python benchmarks/cross_site.py --scale reports/cross-site/scale-steps1000/results.json reports/cross-site/privacy-eps$eps/results.json
