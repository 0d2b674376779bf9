#!/usr/bin/env bash
# The cross-site study's two other B conditions, on release g0 (after study.sh): a long-tailed B (rho 60, head 100,
# chosen on balanced ACC, against the re-balancing baselines) and an acquisition shift of B's images (train, val and
# test through a stain and illumination shift; A's images and the release unshifted), 5 subsets each. For CPU time:
# B's baselines, the release arm val chose in every balanced cell, and model sharing (no ceiling).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
LT='[{long_tail: {ratio: 60, head: 100}, seed: 0}, {long_tail: {ratio: 60, head: 100}, seed: 1}, {long_tail: {ratio: 60, head: 100}, seed: 2}, {long_tail: {ratio: 60, head: 100}, seed: 3}, {long_tail: {ratio: 60, head: 100}, seed: 4}]'
synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release=$OUT/releases/g0 --set "evaluate.regimes=$LT" \
  --set evaluate.select_on=bacc --set evaluate.top_up=100 \
  --set 'evaluate.arms=[real+classic, real+balanced+classic, pretrain+soft+classic, model-sharing+classic]' \
  --out reports/cross-site/long-tail-g0 --cache $OUT/cache --no-progress --wait &
SHIFT='{hed_scale: [1.5, 0.5, 1.0], hed_bias: [0.0, 0.0, 0.05], brightness: -0.08}'
PC25='[{per_class: 25, seed: 0}, {per_class: 25, seed: 1}, {per_class: 25, seed: 2}, {per_class: 25, seed: 3}, {per_class: 25, seed: 4}]'
synthaug experiment recipes/bloodmnist-site-b.yaml --set name=bloodmnist-site-b-shift --set evaluate.release=$OUT/releases/g0 --set "data.shift=$SHIFT" --set "evaluate.regimes=$PC25" \
  --set 'evaluate.arms=[real+classic, pretrain+soft+classic, model-sharing+classic]' \
  --out reports/cross-site/shift-g0 --cache $OUT/cache --no-progress --wait &
wait
python benchmarks/cross_site.py reports/cross-site/long-tail-g0/results.json reports/cross-site/shift-g0/results.json
