#!/usr/bin/env bash
# The BloodMNIST low-data study (reports/bloodmnist/report.md), stage by stage, exactly as it was run.
# Every command resumes: finished models, images and classifier arms are skipped on a rerun.
# Two jobs at a time, one CPU thread each (a 2-core machine); on a GPU run the same commands.
#   bash reports/bloodmnist/study.sh fit        # 7 diffusion models: 47 min on 2 cores
#   bash reports/bloodmnist/study.sh levers     # generator type, guidance, sampler steps, confidence filter (on val)
#   bash reports/bloodmnist/study.sh final      # chosen settings: every regime, every arm, audits, report
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE="${1:?usage: study.sh fit|levers|final}"
RECIPE=recipes/bloodmnist-study.yaml
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LOGS=runs/bloodmnist-logs; mkdir -p "$LOGS"

run_name() { echo "bloodmnist-study-$1pc-s$2"; }   # the names `synthaug experiment` gives its regimes
fit_regime() {  # per_class subset_seed [extra --set ...]
  local pc=$1 seed=$2; shift 2
  synthaug fit "$RECIPE" --data-root "$DATA_ROOT" --no-progress --set name="$(run_name "$pc" "$seed")" \
    --set data.subset.per_class="$pc" --set data.subset.seed="$seed" "$@"
}
fit_perclass() {  # the card's per-class models at the same total budget: 8 models x 188 steps = 1504 steps
  synthaug fit "$RECIPE" --data-root "$DATA_ROOT" --no-progress --set name="bloodmnist-study-perclass-$1pc-s$2" \
    --set data.subset.per_class="$1" --set data.subset.seed="$2" --set model.conditioning=per_class --set train.steps=188
}

OUT=reports/bloodmnist; CACHE="$OUT/cache"   # one arm cache for every report of the study
RUNS25="$(run_name 25 0) $(run_name 25 1) $(run_name 25 2)"
finished() { for r in "$@"; do [ -f "runs/$r/models/all/model_index.json" ] || { echo "runs/$r: not fitted yet; run the fit stage first" >&2; exit 2; }; done; }
refresh() {  # a no-op fit of a finished run rewrites its recipe.yaml with the recipe's current evaluate/generate sections
  for r in "$@"; do local pc=${r#bloodmnist-study-}; pc=${pc%%pc-*}; fit_regime "$pc" "${r##*-s}" > /dev/null; done
}
evaluate25() {  # out_dir, then extra evaluate flags: the three 25/class subsets, each with its own synthetic folder
  local out=$1 folder=$2; shift 2
  synthaug evaluate $(for r in $RUNS25; do echo runs/$r; done) $(for r in $RUNS25; do echo --synthetic runs/$r/$folder; done) \
    --data-root "$DATA_ROOT" --out "$OUT/levers/$out" --cache "$CACHE" --no-progress "$@"
}
gen25() {  # folder, then generate flags: 25 images per class (1x) from each 25/class generator
  local folder=$1; shift
  for r in $RUNS25; do synthaug generate --run runs/$r --ratio 1 --out runs/$r/$folder --no-progress "$@"; done
}
ONE="--set evaluate.ratios=[1] --set evaluate.arms=[real,real+classic,real+synthetic]"
STANDARD="{hflip: true, vflip: true, rotate_deg: 10, shift: 0.1, brightness: 0.1, contrast: 0.1}"
choice() { python reports/bloodmnist/levers.py best "$1"; }

case "$STAGE" in
fit)
  ( fit_regime 25 0; fit_regime 25 2; fit_regime 10 1 ) > "$LOGS/fit-a.log" 2>&1 &
  ( fit_perclass 25 0; fit_regime 25 1; fit_regime 10 0; fit_regime 10 2 ) > "$LOGS/fit-b.log" 2>&1 &
  wait
  ;;
levers)
  # Each lever is chosen on val (mean val ACC of real+synthetic 1x over 3 subsets x 2 seeds), in this order,
  # each sweep at the choices before it; levers.md tabulates them. Generator type at 25/class, subset 0.
  finished $RUNS25; refresh $RUNS25
  P=bloodmnist-study-perclass-25pc-s0; R0=$(run_name 25 0)
  fit_perclass 25 0 > /dev/null
  ( synthaug generate --run runs/$P --ratio 1 --no-progress
    synthaug evaluate runs/$P --data-root "$DATA_ROOT" --out "$OUT/levers/generator-per_class" --cache "$CACHE" --no-progress \
      --set evaluate.ratios=[1] --set evaluate.arms=[real,real+classic,real+synthetic,synthetic]
    # classical augmentation: flips only (the recipe's) against flips + rotation, shift, brightness, contrast
    evaluate25 classic-flips synthetic-g1 --set evaluate.arms=[real,real+classic]
    evaluate25 classic-standard synthetic-g1 --set evaluate.arms=[real,real+classic] --set "evaluate.classic=$STANDARD"
  ) > "$LOGS/levers-a.log" 2>&1 &
  ( synthaug generate --run runs/$R0 --ratio 1 --out runs/$R0/synthetic-g1 --no-progress
    synthaug evaluate runs/$R0 --synthetic runs/$R0/synthetic-g1 --data-root "$DATA_ROOT" --out "$OUT/levers/generator-class_conditional" \
      --cache "$CACHE" --no-progress \
      --set evaluate.ratios=[1] --set evaluate.arms=[real,real+classic,real+synthetic,synthetic]
  ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  # guidance scale (class-conditional generators, DPM-Solver++ 20 steps)
  ( gen25 synthetic-g0 --guidance-scale 0; gen25 synthetic-g1 --guidance-scale 1; evaluate25 guidance-0 synthetic-g0 $ONE; evaluate25 guidance-1 synthetic-g1 $ONE ) > "$LOGS/levers-a.log" 2>&1 &
  ( gen25 synthetic-g2 --guidance-scale 2; gen25 synthetic-g4 --guidance-scale 4; evaluate25 guidance-2 synthetic-g2 $ONE; evaluate25 guidance-4 synthetic-g4 $ONE ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  G=$(choice guidance)
  # sampler steps (DPM-Solver++ 20 vs 50) at the chosen guidance
  ( evaluate25 steps-20 synthetic-g$G $ONE ) > "$LOGS/levers-a.log" 2>&1 &
  ( gen25 synthetic-g$G-s50 --guidance-scale $G --steps 50; evaluate25 steps-50 synthetic-g$G-s50 $ONE ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  S=$(choice steps); BASE=synthetic-g$G; [ "$S" = 20 ] || BASE=synthetic-g$G-s$S
  # classifier-confidence filter (generate --filter-confidence TAU) at the chosen guidance and steps
  ( evaluate25 filter-none $BASE $ONE
    gen25 $BASE-f0.5 --guidance-scale $G --steps $S --filter-confidence 0.5; evaluate25 filter-0.5 $BASE-f0.5 $ONE ) > "$LOGS/levers-a.log" 2>&1 &
  ( gen25 $BASE-f0.8 --guidance-scale $G --steps $S --filter-confidence 0.8; evaluate25 filter-0.8 $BASE-f0.8 $ONE ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  python reports/bloodmnist/levers.py table generator classic guidance steps filter > "$OUT/levers.md"
  cat "$OUT/levers.md"
  ;;
final)
  # Every regime with the settings chosen on val (levers.md): 1x and 5x each class's real count (evaluate.ratios).
  G=$(choice guidance); S=$(choice steps); T=$(choice filter); C=$(choice classic)
  FLAGS="--guidance-scale $G --steps $S"; [ "$T" = none ] || FLAGS="$FLAGS --filter-confidence $T"
  CLASSIC=(); [ "$C" = flips ] || CLASSIC=(--set "evaluate.classic=$STANDARD")
  RUNS10="$(run_name 10 0) $(run_name 10 1) $(run_name 10 2)"
  finished $RUNS10 $RUNS25; refresh $RUNS10 $RUNS25
  echo "chosen on val: guidance $G, steps $S, filter $T, classic $C"
  part() {  # one regime's three runs: generate, audit, evaluate into a partial report (the arms land in the shared cache)
    local name=$1; shift
    for r in "$@"; do synthaug generate --run runs/$r --ratio 5 --no-progress $FLAGS; done
    for r in "$@"; do synthaug audit --run runs/$r --data-root "$DATA_ROOT" --no-progress; done
    synthaug evaluate $(for r in "$@"; do echo runs/$r; done) --data-root "$DATA_ROOT" --out "$OUT/parts/$name" --cache "$CACHE" \
      --no-progress "${CLASSIC[@]}"
  }
  ( part 10pc $RUNS10 ) > "$LOGS/final-a.log" 2>&1 &
  ( part 25pc $RUNS25 ) > "$LOGS/final-b.log" 2>&1 &
  wait
  # The committed report: both regimes together, every arm read from the cache.
  synthaug evaluate $(for r in $RUNS10 $RUNS25; do echo runs/$r; done) --data-root "$DATA_ROOT" --out "$OUT" --cache "$CACHE" \
    --no-progress "${CLASSIC[@]}"
  ;;
*)
  echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
