#!/usr/bin/env bash
# The cross-site study's generator-compute curve (after study.sh): A's generator g0 (train.seed 0, the 1.1 M UNet,
# batch 32) fitted for 1,000 and 2,000 steps beside study.sh's 4,000, each drawn, audited and released the same way,
# then B's release arms on the same 10 balanced subsets (release-chain.sh). Background jobs on a 2-core CPU:
# OMP_NUM_THREADS=1, one per length.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
source reports/cross-site/release-chain.sh
for n in 1000 2000; do release_chain bloodmnist-site-a-g0-steps$n scale-steps$n --set train.steps=$n & done
wait
python benchmarks/cross_site.py --scale reports/cross-site/scale-steps1000/results.json \
  reports/cross-site/scale-steps2000/results.json reports/cross-site/release-g0/results.json
