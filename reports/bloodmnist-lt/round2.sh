#!/usr/bin/env bash
# Long-tailed BloodMNIST, round 2 (issue 30; notes: reports/bloodmnist-lt/notes.md, "Round 2"): the levers of the
# long-tail literature (head-to-tail translations with their soft labels, a teacher's soft labels, a loss weight below 1
# on synthetic images, decoupled re-training as a baseline and as a finishing step), chosen on val over draws 0-4, then
# the one test comparison on draws 5-9 with two classifier seeds each. Every stage resumes: run it again after a stop.
#
# On a 2-core CPU: the ten generators (one per draw, 2,000 steps of batch 32, ~24 min each with two at a time on one
# torch thread each) are fitted first, two queues side by side (draws 0-4 first: the choices need them); the sweep then
# fits whatever is still missing itself (--wait queues it behind a fit still running on the same draw).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
RECIPE=recipes/bloodmnist-lt2.yaml
FITS=../study-runs/lt2
mkdir -p "$FITS"
python - "$RECIPE" "$FITS" <<'EOF'
import sys
from pathlib import Path
from synthaug.recipe.recipe import load_recipe, recipe_to_yaml
from synthaug.study.experiment import regime_recipes
draws = "[" + ", ".join(f"{{long_tail: {{ratio: 60, head: 600}}, seed: {s}}}" for s in range(10)) + "]"
recipe = load_recipe(sys.argv[1], [f"evaluate.regimes={draws}", "sweep=null"])
for sub in regime_recipes(recipe):  # the run names the sweep and its confirmation look for
    Path(sys.argv[2], f"{sub.name}.yaml").write_text(recipe_to_yaml(sub))
EOF
fit_draws() { for s in "$@"; do synthaug fit "$FITS/bloodmnist-lt2-lt60h600-s$s.yaml" --no-progress --wait; done; }
fit_draws 0 2 4 > "$FITS/queue-a.log" 2>&1 &
fit_draws 1 3 5 6 7 8 9 > "$FITS/queue-b.log" 2>&1 &
wait %1   # draws 0, 2 and 4 fitted (1 and 3 finish before 4 in queue b): the choices can start beside the other fits
synthaug sweep "$RECIPE" --out reports/bloodmnist-lt/round2 --cache ../study-runs/report/cache-lt2 --wait --no-progress
wait
