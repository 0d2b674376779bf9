#!/usr/bin/env bash
# The BloodMNIST low-data study (reports/bloodmnist/report.md), stage by stage, exactly as it was run.
# Every command resumes: finished models, images and classifier arms are skipped on a rerun.
# Two jobs at a time, one CPU thread each (a 2-core machine); on a GPU run the same commands.
# Runs go to ../study-runs (recipes/bloodmnist-study.yaml output_dir), outside the repository.
#   bash reports/bloodmnist/study.sh fit        # generators: class-conditional on every subset, per-class at 25/class
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE="${1:?usage: study.sh fit}"
RECIPE=recipes/bloodmnist-study.yaml
DATA_ROOT="${SYNTHAUG_DATA_ROOT:-../shared/data/medmnist}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
RUNS=../study-runs; LOGS=$RUNS/logs; mkdir -p "$LOGS"

run_name() { echo "bloodmnist-study-$1pc-s$2"; }   # the names `synthaug experiment` gives its regimes
fit_regime() {  # per_class subset_seed [extra --set ...]
  local pc=$1 seed=$2; shift 2
  synthaug fit "$RECIPE" --data-root "$DATA_ROOT" --no-progress --set name="$(run_name "$pc" "$seed")" \
    --set data.subset.per_class="$pc" --set data.subset.seed="$seed" "$@"
}
fit_perclass() {  # per-class models at the same total budget: 8 models x 188 steps = 1504 steps
  fit_regime "$1" "$2" --set name="bloodmnist-study-perclass-$1pc-s$2" --set model.conditioning=per_class --set train.steps=188
}

case "$STAGE" in
fit)
  ( fit_regime 25 0; fit_regime 25 1; fit_regime 25 2; fit_perclass 25 1 ) > "$LOGS/fit-a.log" 2>&1 &
  ( fit_regime 10 0; fit_regime 10 1; fit_regime 10 2; fit_perclass 25 0; fit_perclass 25 2 ) > "$LOGS/fit-b.log" 2>&1 &
  wait
  ;;
*)
  echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
