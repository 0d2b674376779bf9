#!/usr/bin/env bash
# Long-tailed BloodMNIST, round 2 (issue 30; notes: reports/bloodmnist-lt/notes.md, "Round 2"): the levers of the
# long-tail literature (head-to-tail translations with their soft labels, a teacher's soft labels, a loss weight below 1
# on synthetic images, decoupled re-training as a baseline and as a finishing step), chosen on val over draws 0-4, then
# the one test comparison on draws 5-9 with two classifier seeds each. Every stage resumes: run it again after a stop.
#
# On a 2-core CPU: the ten generators (one per draw, 2,000 steps of batch 32, ~27 min each with two at a time on one
# torch thread each) are fitted first, two queues side by side (draws 0-4 first: the choices need them); the sweep then
# fits whatever is still missing itself (--wait queues it behind a fit still running on the same draw).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
RECIPE=recipes/bloodmnist-lt2.yaml
mkdir -p ../study-runs/lt2
# each draw's generator under the run name the sweep and its confirmation look for (`experiment`'s <name>-<regime>)
fit_draws() {
  for s in "$@"; do
    synthaug fit "$RECIPE" --set data.subset.seed=$s --set name=bloodmnist-lt2-lt60h600-s$s --no-progress --wait
  done
}
fit_draws 0 2 4 > ../study-runs/lt2/queue-a.log 2>&1 & queue_a=$!
fit_draws 1 3 5 6 7 8 9 > ../study-runs/lt2/queue-b.log 2>&1 &
wait $queue_a   # draws 0, 2 and 4 fitted (1 and 3 finish before 4 in queue b): the choices can start beside the other fits
synthaug sweep "$RECIPE" --out reports/bloodmnist-lt/round2 --cache ../study-runs/report/cache-lt2 --wait --no-progress
wait
