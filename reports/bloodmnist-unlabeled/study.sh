#!/usr/bin/env bash
# reports/bloodmnist-unlabeled: few labels (10 or 25 per class) and the rest of BloodMNIST's training split unlabeled.
#   bash reports/bloodmnist-unlabeled/study.sh fit        # the pool generators (this study: on a GPU, python benchmarks/gpu_fits.py OUT DATA_ROOT recipes/bloodmnist-unlabeled.yaml)
#   bash reports/bloodmnist-unlabeled/study.sh generate   # variations (strength 0.35, 5 per real image) and guided noise-drawn sets
#   bash reports/bloodmnist-unlabeled/study.sh evaluate [variations|noise] [25|10]   # arms, pseudo-labels included
#   bash reports/bloodmnist-unlabeled/study.sh cas        # synthetic-only arm of the noise-drawn sets (25/class, seed 0)
#   bash reports/bloodmnist-unlabeled/study.sh audit      # audits of subset 0's noise-drawn sets (labelled and pool copies)
#   bash reports/bloodmnist-unlabeled/study.sh report     # copy the reports here
# Every stage resumes. One torch thread per process; at most two processes on the 2-core CPU. The classifier
# arms share reports/bloodmnist's cache: the real arms of the same labelled subsets are not trained twice.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE="${1:?usage: study.sh fit|generate|evaluate|cas|audit|report}"
RECIPE=recipes/bloodmnist-unlabeled.yaml
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PATH="$PWD/.venv/bin:$PATH"
RUNS=../study-runs; OUT=$RUNS/report-unlabeled
REGIMES="25:0 25:1 25:2 10:0 10:1 10:2"
name() { echo "bloodmnist-unlabeled-$1pc-s$2"; }
each() { for r in $REGIMES; do echo "$(name "${r%%:*}" "${r##*:}")"; done; }
# The labelled-only generators of reports/bloodmnist on the same labelled subsets: the pool's contribution.
labelled_only() { for r in $REGIMES; do echo "bloodmnist-study-${r%%:*}pc-s${r##*:}"; done; }
CLASSIC="evaluate.classic={hflip: true, vflip: true, rot90: true, rotate_deg: 0, shift: 0.0, brightness: 0.0, contrast: 0.0}"

case "$STAGE" in
fit)
  for r in $REGIMES; do
    synthaug fit $RECIPE --data-root "$DATA_ROOT" --no-progress --set name="$(name "${r%%:*}" "${r##*:}")" \
      --set data.subset.per_class="${r%%:*}" --set data.subset.seed="${r##*:}"
  done ;;
generate)
  for run in $(each); do
    synthaug generate --run $RUNS/$run --out $RUNS/$run/var-0.35 --data-root "$DATA_ROOT" --no-progress --from-real --per-real 5 --strength 0.35
  done
  for run in $(each); do
    synthaug generate --run $RUNS/$run --out $RUNS/$run/noise-g4 --data-root "$DATA_ROOT" --no-progress --ratio 1 --guidance-scale 4 --steps 50
  done ;;
evaluate)  # study.sh evaluate [variations|noise] [25|10]: one report, or all four
  for source in ${2:-variations noise}; do for pc in ${3:-25 10}; do
    runs=$(each | grep -- "-${pc}pc-")
    if [ "$source" = variations ]; then
      arms="[real,real+classic,real+pseudo+classic,real+replace+classic]"; folder=var-0.35
    else
      arms="[real,real+classic,real+pseudo+classic,real+synthetic+classic]"; folder=noise-g4
    fi
    synthaug evaluate $(for r in $runs; do echo $RUNS/$r; done) $(for r in $runs; do echo --synthetic $RUNS/$r/$folder; done) \
      --data-root "$DATA_ROOT" --out $OUT/$source-${pc}pc --cache $RUNS/report/cache --no-progress --set "$CLASSIC" \
      --set "evaluate.arms=$arms" --set "evaluate.replace_p=[0.25]" --set "evaluate.ratios=[1]" --set "evaluate.pseudo_confidence=[0.9,0.99]"
  done; done ;;
cas)  # the pool generators' noise-drawn images alone (classification accuracy score), seed 0, as reports/bloodmnist/final-noise
  runs=$(each | grep -- "-25pc-")
  synthaug evaluate $(for r in $runs; do echo $RUNS/$r; done) $(for r in $runs; do echo --synthetic $RUNS/$r/noise-g4; done) \
    --data-root "$DATA_ROOT" --out $OUT/cas-25pc --cache $RUNS/report/cache --no-progress --set "$CLASSIC" \
    --set "evaluate.arms=[real,synthetic]" --set "evaluate.seeds=[0]" ;;
audit)  # copies of labelled and of pool images, fidelity: the noise-drawn sets of subset 0
  for pc in 10 25; do
    synthaug audit --run $RUNS/$(name $pc 0) --synthetic $RUNS/$(name $pc 0)/noise-g4 --data-root "$DATA_ROOT" --no-progress
  done ;;
report)
  for folder in $OUT/*/; do
    [ -f "$folder/report.md" ] || continue
    dest=reports/bloodmnist-unlabeled/$(basename "$folder"); mkdir -p "$dest"
    cp "$folder"/report.md "$folder"/results.json "$dest"/ && cp "$folder"/*.png "$dest"/ 2>/dev/null || true
  done
  for run in $(each); do  # audits and the generators' last sample grids
    for set in noise-g4 var-0.35; do
      [ -f $RUNS/$run/$set/audit.md ] || continue
      mkdir -p reports/bloodmnist-unlabeled/audit/$run/$set
      cp $RUNS/$run/$set/audit.{md,json} $RUNS/$run/$set/audit_*.png reports/bloodmnist-unlabeled/audit/$run/$set/
    done
    mkdir -p reports/bloodmnist-unlabeled/samples && cp $RUNS/$run/samples/all/step_0002000.png reports/bloodmnist-unlabeled/samples/$run.png
  done ;;
esac
