#!/usr/bin/env bash
# The cross-site study, end to end: site A's two generators, their audited releases with the teacher's soft labels,
# and site B's experiments. Every step resumes or skips finished work when run again; runs live outside the repository.
# Background jobs on a 2-core CPU: OMP_NUM_THREADS=1, at most two at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=../study-runs/cross-site
export OMP_NUM_THREADS=1
site_a() {  # generator g: fit, draw 250 per class, audit (near-copies, fidelity, membership inference), release
  local g=$1 run=$OUT/bloodmnist-site-a-g$1
  synthaug fit recipes/bloodmnist-site-a.yaml --set train.seed=$g --set name=bloodmnist-site-a-g$g --no-progress --wait
  synthaug generate --run "$run" --per-class 250 --no-progress
  [ -f "$run/synthetic/audit.json" ] || synthaug audit --run "$run" --no-progress
  [ -d "$OUT/releases/g$g" ] || synthaug release --synthetic "$run/synthetic" --out "$OUT/releases/g$g" --teacher --no-progress
}
# Site B's references need no release (real-only, model sharing, the raw-sharing ceiling): they run beside A's fits
site_a 0 & site_a 1 &
synthaug experiment recipes/bloodmnist-site-b.yaml --set 'evaluate.arms=[real+classic, model-sharing+classic, real+site-a+classic]' \
  --out $OUT/reports/references --cache $OUT/cache --no-progress --wait &
wait
# Then each release's arms (the references come from the shared cache), each as soon as its release exists. On the
# 2-core CPU the hard-label add arm (real+synthetic+classic, +0.1 in the first probe) was left out for time.
b_side() {
  local g=$1 arms=$2
  while [ ! -f "$OUT/releases/g$g/release.json" ]; do sleep 20; done
  synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release=$OUT/releases/g$g --set "evaluate.arms=$arms" \
    --out reports/cross-site/release-g$g --cache $OUT/cache --no-progress --wait
}
b_side 0 '[real+classic, pretrain+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' &
b_side 1 '[real+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' &
wait
python benchmarks/cross_site.py reports/cross-site/release-g0/results.json reports/cross-site/release-g1/results.json
