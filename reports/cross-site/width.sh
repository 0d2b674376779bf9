#!/usr/bin/env bash
# The cross-site study's generator-size point (after study.sh and scale.sh; NOT RUN YET: started on the 2-core CPU
# beside three other jobs, it had not reached step 500 in 14 min and was stopped for the DP fits). A's generator g0
# (train.seed 0) 4x wider in parameters (block_out_channels [64, 128, 128], about 4.4 M against the studies' 1.1 M
# [32, 64, 64]) for 1,000 steps of batch 32, the length of scale.sh's shortest 1.1 M point, so the two differ by width
# alone; drawn, audited, released and used by B as scale.sh does (release-chain.sh). About 1 h on an idle CPU thread.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
source reports/cross-site/release-chain.sh
release_chain bloodmnist-site-a-g0-wide-steps1000 width-steps1000 --set train.steps=1000 --set 'model.block_out_channels=[64, 128, 128]'
python benchmarks/cross_site.py --scale reports/cross-site/scale-steps1000/results.json reports/cross-site/width-steps1000/results.json
