# Sourced by scale.sh, width.sh and privacy.sh (after study.sh): one A generator's way to B, each step resuming or
# skipping finished work. release_chain NAME REPORT [--set FIELD=VALUE ...]: fit recipes/bloodmnist-site-a.yaml
# (train.seed 0, with the overrides) as run $OUT/NAME, draw 250 images per class, audit them, release them with the
# teacher's soft labels as $OUT/releases/<NAME without bloodmnist-site-a->, and run B's release arms on B's 10
# balanced subsets into reports/cross-site/REPORT (B's baselines and references come from study.sh's cache).
release_chain() {
  local name=$1 report=$2
  shift 2
  local run=$OUT/$name release=$OUT/releases/${name#bloodmnist-site-a-}
  synthaug fit recipes/bloodmnist-site-a.yaml --set train.seed=0 "$@" --set name="$name" --no-progress --wait
  synthaug generate --run "$run" --per-class 250 --no-progress
  [ -f "$run/synthetic/audit.json" ] || synthaug audit --run "$run" --no-progress
  [ -d "$release" ] || synthaug release --synthetic "$run/synthetic" --out "$release" --teacher --no-progress
  synthaug experiment recipes/bloodmnist-site-b.yaml --set evaluate.release="$release" \
    --set 'evaluate.arms=[real+classic, pretrain+soft+classic, real+synthetic+soft+classic, model-sharing+classic, real+site-a+classic]' \
    --out "reports/cross-site/$report" --cache "$OUT/cache" --no-progress --wait
}
