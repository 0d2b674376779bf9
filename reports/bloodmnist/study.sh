#!/usr/bin/env bash
# The BloodMNIST low-data study (reports/bloodmnist/report.md), stage by stage, exactly as it was run.
# Every command resumes: finished models, images and classifier arms are skipped on a rerun.
# Two jobs at a time, one CPU thread each (a 2-core machine); on a GPU run the same commands.
# Runs, lever reports and the shared arm cache go to ../study-runs (outside the repository);
# `report` copies the finished reports into reports/bloodmnist/.
#   bash reports/bloodmnist/study.sh fit       # generators: class-conditional on every subset
#   bash reports/bloodmnist/study.sh fit-generator  # per-class (3 subsets) and no-augmentation (subset 0) generators at 25/class
#   bash reports/bloodmnist/study.sh levers    # levers at 25/class, each chosen on val: classical baseline, source, usage
#   bash reports/bloodmnist/study.sh levers2   # guidance of the variations and K variations per image, at the choices above
#   bash reports/bloodmnist/study.sh generator # the generator levers at the choices above: per-class vs class-conditional, augmentation
#   bash reports/bloodmnist/study.sh final     # chosen settings on every subset at 10 and 25/class, noise-drawn sets, audits
#   bash reports/bloodmnist/study.sh report    # copy the reports into reports/bloodmnist/ and tabulate the levers
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE="${1:?usage: study.sh fit|fit-generator|levers|levers2|generator|final|report}"
RECIPE=recipes/bloodmnist-study.yaml
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
RUNS=../study-runs; OUT=$RUNS/report; CACHE=$OUT/cache; LOGS=$RUNS/logs; mkdir -p "$LOGS" "$OUT"
LEVERS="python reports/bloodmnist/levers.py"
export PATH="$PWD/.venv/bin:$PATH"   # the repository's environment (README, Set-up)

run_name() { echo "bloodmnist-study-$1pc-s$2"; }   # the names `synthaug experiment` gives its regimes
fit_regime() {  # per_class subset_seed [extra --set ...]
  local pc=$1 seed=$2; shift 2
  synthaug fit "$RECIPE" --data-root "$DATA_ROOT" --no-progress --set name="$(run_name "$pc" "$seed")" \
    --set data.subset.per_class="$pc" --set data.subset.seed="$seed" "$@"
}
fit_perclass() {  # per-class models at the same total budget: 8 models x 188 steps = 1504 steps
  fit_regime "$1" "$2" --set name="bloodmnist-study-perclass-$1pc-s$2" --set model.conditioning=per_class --set train.steps=188
}
fit_noaug() {  # generator augmentation off: the real images only, as diffusers trains by default
  fit_regime "$1" "$2" --set name="bloodmnist-study-noaug-$1pc-s$2" --set "train.augment=[]"
}

RUNS25="$(run_name 25 0) $(run_name 25 1) $(run_name 25 2)"
RUNS10="$(run_name 10 0) $(run_name 10 1) $(run_name 10 2)"
# Classical augmentation of the baseline (evaluate.classic), chosen on val: blood cells have no orientation.
declare -A CLASSIC=(
  [flips]="{hflip: true, vflip: true, rot90: false, rotate_deg: 0, shift: 0.0, brightness: 0.0, contrast: 0.0}"
  [dihedral]="{hflip: true, vflip: true, rot90: true, rotate_deg: 0, shift: 0.0, brightness: 0.0, contrast: 0.0}"
  [standard]="{hflip: true, vflip: true, rot90: false, rotate_deg: 10, shift: 0.1, brightness: 0.1, contrast: 0.1}"
)
BASE="real,real+classic"
evaluate_runs() {  # out_dir folder runs..., then -- and extra evaluate flags
  local out=$1 folder=$2; shift 2; local runs=()
  while [ "$1" != "--" ]; do runs+=("$1"); shift; done; shift
  synthaug evaluate $(for r in "${runs[@]}"; do echo $RUNS/$r; done) $(for r in "${runs[@]}"; do echo --synthetic $RUNS/$r/$folder; done) \
    --data-root "$DATA_ROOT" --out "$OUT/$out" --cache "$CACHE" --no-progress "$@"
}
gen_runs() {  # folder runs..., then -- and generate flags
  local folder=$1; shift; local runs=()
  while [ "$1" != "--" ]; do runs+=("$1"); shift; done; shift
  for r in "${runs[@]}"; do synthaug generate --run $RUNS/$r --out $RUNS/$r/$folder --data-root "$DATA_ROOT" --no-progress "$@"; done
}
classic_set() { echo "evaluate.classic=${CLASSIC[$($LEVERS best $OUT classic)]}"; }
source_flags() {  # generate flags of a source setting: noise-g4 or var-<strength>
  case "$1" in noise-g4) echo "--guidance-scale 4 --steps 50" ;; var-*) echo "--from-real --strength ${1#var-}" ;; esac
}
usage_flags() {  # evaluate flags of a usage setting: add-<R>x[-weight<W>] or replace-p<P>
  case "$1" in
    add-*) local r=${1#add-}; r=${r%%x*}; echo "--set evaluate.arms=[$BASE,real+synthetic+classic] --set evaluate.ratios=[$r]"
           case "$1" in *weight*) echo "--set evaluate.synthetic_weight=${1##*weight}" ;; esac ;;
    replace-p*) echo "--set evaluate.arms=[$BASE,real+replace+classic] --set evaluate.replace_p=[${1#replace-p}]" ;;
  esac
}
usage_amount() {  # generate amount a usage setting needs: variations per real image (replace uses 5)
  case "$1" in add-*) local r=${1#add-}; r=${r%%x*}; echo "--per-real $(( r > 5 ? r : 5 ))" ;; replace-*) echo "--per-real 5" ;; esac
}

case "$STAGE" in
fit)
  # The class-conditional generator of each subset, three at 25/class and three at 10/class (10/class subsets 1 and 2
  # were fitted in a later session).
  ( fit_regime 25 0; fit_regime 25 1; fit_regime 10 1 ) > "$LOGS/fit-a.log" 2>&1 &
  ( fit_regime 10 0; fit_regime 25 2; fit_regime 10 2 ) > "$LOGS/fit-b.log" 2>&1 &
  wait
  ;;
fit-generator)
  # The generators of the `generator` stage: per-class models on the three 25/class subsets, no augmentation on subset 0.
  ( fit_perclass 25 0; fit_perclass 25 2 ) > "$LOGS/fit-generator-a.log" 2>&1 &
  ( fit_perclass 25 1; fit_noaug 25 0 ) > "$LOGS/fit-generator-b.log" 2>&1 &
  wait
  ;;
levers)
  # L0 classical augmentation of the baseline: flips, the 8 dihedral symmetries, or flips + rotation, shift, brightness, contrast.
  for c in flips dihedral standard; do
    evaluate_runs levers/classic-$c synthetic $RUNS25 -- --set "evaluate.arms=[$BASE]" --set "evaluate.classic=${CLASSIC[$c]}"
  done
  CS=$(classic_set)
  # L1 source: images drawn from noise (guidance 4, DPM-Solver++ 50 steps: the previous study's choices) or variations of
  # the real images at strength 0.2, 0.35 or 0.5 (5 per image). Scored by the better of adding 1x and replacing with
  # p 0.5. From here on the sweeps use classifier seed 0 only (3 subsets = 3 pairs), for CPU time; the final table uses both.
  SEED0="evaluate.seeds=[0]"
  ( gen_runs noise-g4 $RUNS25 -- --ratio 1 $(source_flags noise-g4)
    evaluate_runs levers/source-noise-g4 noise-g4 $RUNS25 -- --set "evaluate.arms=[$BASE,real+synthetic+classic]" --set evaluate.ratios=[1] --set "$CS" --set "$SEED0"
    gen_runs var-0.5 $RUNS25 -- --per-real 5 $(source_flags var-0.5)
    evaluate_runs levers/source-var-0.5 var-0.5 $RUNS25 -- --set "evaluate.arms=[$BASE,real+synthetic+classic,real+replace+classic]" \
      --set evaluate.ratios=[1] --set evaluate.replace_p=[0.5] --set "$CS" --set "$SEED0"
  ) > "$LOGS/levers-a.log" 2>&1 &
  ( for s in 0.35 0.2; do
      gen_runs var-$s $RUNS25 -- --per-real 5 $(source_flags var-$s)
      evaluate_runs levers/source-var-$s var-$s $RUNS25 -- --set "evaluate.arms=[$BASE,real+synthetic+classic,real+replace+classic]" \
        --set evaluate.ratios=[1] --set evaluate.replace_p=[0.5] --set "$CS" --set "$SEED0"
    done ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  S=$($LEVERS best $OUT source)
  echo "chosen: classic $($LEVERS best $OUT classic), source $S"
  # L2 usage of the chosen source: add 1x or 5x, replace with p 0.25, 0.5 or 1.
  ADD="evaluate.arms=[$BASE,real+synthetic+classic]"; REP="evaluate.arms=[$BASE,real+replace+classic]"
  if [ "${S#var-}" != "$S" ]; then
    ( for r in 1 5; do evaluate_runs levers/usage-add-${r}x $S $RUNS25 -- --set "$ADD" --set evaluate.ratios=[$r] --set "$CS" --set "$SEED0"; done
    ) > "$LOGS/levers-a.log" 2>&1 &
    ( for p in 0.25 0.5 1.0; do evaluate_runs levers/usage-replace-p$p $S $RUNS25 -- --set "$REP" --set evaluate.replace_p=[$p] --set "$CS" --set "$SEED0"; done
    ) > "$LOGS/levers-b.log" 2>&1 &
    wait
  else
    gen_runs $S $RUNS25 -- --ratio 5 $(source_flags $S)
    for r in 1 5; do evaluate_runs levers/usage-add-${r}x $S $RUNS25 -- --set "$ADD" --set evaluate.ratios=[$r] --set "$CS" --set "$SEED0"; done
  fi
  U=$($LEVERS best $OUT usage); echo "chosen usage: $U"
  # Not swept, for CPU time: sampler steps, the generator's augmentation and per-class models (stage `generator`).
  ;;
levers2)
  # L3 (2026-11-26) at the choices above (dihedral, variations at 0.35, replace p 0.25): guidance of the variations
  # (1, as chosen, against 2) and variations per real image K (5, as chosen, against 10; replace draws among them).
  CS=$(classic_set); SEED0="evaluate.seeds=[0]"; REP="evaluate.arms=[$BASE,real+replace+classic]"
  gen_runs var-0.35-g2 $RUNS25 -- --per-real 5 --from-real --strength 0.35 --guidance-scale 2
  evaluate_runs levers/guidance-g2 var-0.35-g2 $RUNS25 -- --set "$REP" --set evaluate.replace_p=[0.25] --set "$CS" --set "$SEED0"
  gen_runs var-0.35-k10 $RUNS25 -- --per-real 10 --from-real --strength 0.35
  evaluate_runs levers/k-10 var-0.35-k10 $RUNS25 -- --set "$REP" --set evaluate.replace_p=[0.25] --set "$CS" --set "$SEED0"
  ;;
generator)
  # (not run yet: needs `study.sh fit-generator` first) L4 the generator, at the chosen source, usage and guidance: per-class models (no guidance) on the three 25/class
  # subsets, and horizontal flips only instead of the 8 symmetries while training (subset 0).
  # Guidance 1: levers2's guidance 2 did not beat it on val (levers/guidance-g2 holds g2 only, so `best` cannot choose).
  S=$($LEVERS best $OUT source); U=$($LEVERS best $OUT usage); G=1; CS=$(classic_set)
  P25="bloodmnist-study-perclass-25pc-s0 bloodmnist-study-perclass-25pc-s1 bloodmnist-study-perclass-25pc-s2"
  evaluate_runs levers/generator-class_conditional $S-g$G $RUNS25 -- $(usage_flags $U) --set "$CS"
  ( gen_runs $S $P25 -- $(usage_amount $U) $(source_flags $S)
    evaluate_runs levers/generator-per_class $S $P25 -- $(usage_flags $U) --set "$CS" ) > "$LOGS/levers-a.log" 2>&1 &
  ( H=bloodmnist-study-noaug-25pc-s0; R0=$(run_name 25 0)
    gen_runs $S-g$G $H -- $(usage_amount $U) $(source_flags $S) --guidance-scale $G
    evaluate_runs levers/augment-off $S-g$G $H -- $(usage_flags $U) --set "$CS"
    evaluate_runs levers/augment-dihedral $S-g$G $R0 -- $(usage_flags $U) --set "$CS" ) > "$LOGS/levers-b.log" 2>&1 &
  wait
  ;;
final)
  # Every subset at 10 and 25/class with the settings chosen on val; images drawn from noise beside them for the
  # classification accuracy score and the copy rate; 5x more real images per class as the ceiling.
  S=$($LEVERS best $OUT source); U=$($LEVERS best $OUT usage); CS=$(classic_set)
  SET=$S; GFLAGS="$(usage_amount $U) $(source_flags $S)"
  [ "${S#var-}" != "$S" ] || GFLAGS="--ratio 5 $(source_flags $S)"
  echo "chosen on val: classic $($LEVERS best $OUT classic), source $S, usage $U"
  ( gen_runs $SET $RUNS10 -- $GFLAGS
    evaluate_runs final $SET $RUNS10 $RUNS25 -- $(usage_flags $U) --set "$CS"
    # the ceiling: 5x more real images per class (125), classifier seed 0
    evaluate_runs ceiling synthetic $RUNS25 -- --set "evaluate.arms=[$BASE]" --set data.subset.per_class=125 --set "$CS" --set "evaluate.seeds=[0]"
  ) > "$LOGS/final-a.log" 2>&1 &
  ( gen_runs noise-g4 $RUNS10 -- --ratio 1 $(source_flags noise-g4)
    # images drawn from noise: the classification accuracy score (synthetic only vs real only), classifier seed 0
    evaluate_runs final-noise noise-g4 $RUNS10 $RUNS25 -- --set "evaluate.arms=[real,synthetic]" --set "$CS" --set "evaluate.seeds=[0]"
    # copies: the noise-drawn sets at 10 and 25/class, and the chosen variations at 25/class
    for r in $(run_name 10 0) $(run_name 25 0); do synthaug audit --run $RUNS/$r --synthetic $RUNS/$r/noise-g4 --data-root "$DATA_ROOT" --no-progress; done
    [ "$SET" = noise-g4 ] || synthaug audit --run $RUNS/$(run_name 25 0) --synthetic $RUNS/$(run_name 25 0)/$SET --data-root "$DATA_ROOT" --no-progress
  ) > "$LOGS/final-b.log" 2>&1 &
  wait
  ;;
report)
  DEST=reports/bloodmnist; mkdir -p $DEST/levers $DEST/audit
  cp $OUT/final/{report.md,results.csv,results.json,accuracy_vs_size.png} $OUT/final/samples_*.png $DEST/
  for d in final-noise ceiling $(cd $OUT && ls -d levers/* 2>/dev/null); do
    mkdir -p $DEST/$d; cp $OUT/$d/{report.md,results.csv,results.json} $DEST/$d/
  done
  for r in $RUNS10 $RUNS25; do for f in $(ls -d $RUNS/$r/*/ | xargs -n1 basename); do
    [ -f $RUNS/$r/$f/audit.md ] && mkdir -p $DEST/audit/$r/$f && cp $RUNS/$r/$f/audit.{md,json} $RUNS/$r/$f/audit_*.png $DEST/audit/$r/$f/
  done; done
  $LEVERS table $OUT classic source usage guidance k > $DEST/levers.md
  cat $DEST/levers.md
  ;;
*)
  echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
