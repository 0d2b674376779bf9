"""The long-tailed study's ceiling, paired draw by draw: the same classes topped up to 200 with more *real* images
(the ceiling experiment's `real+balanced+classic` on the counts regime, which holds each long-tailed draw and more
of the rare classes' real images) against the long-tailed draw's own arms: the best re-balancing arm and the top-up
chosen on val. Reads results.json files only (no training):

    python benchmarks/lt_ceiling.py reports/bloodmnist-lt/ceiling/results.json \
        reports/bloodmnist-lt/results.json reports/bloodmnist-lt/sweep/confirm/results.json

The unit is the draw (subset seed): the ceiling's counts regime of seed s nests draw s of the long-tailed profile.
The ceiling has no class under 60 real images, so its rare-class recall is taken over the long-tailed draw's rare
classes (its rows' `rare_classes`), from the per-class recalls.
"""
import json
import sys

import numpy as np
import pandas as pd

from synthaug.evaluation.summary import paired_gain

CEILING_ARM = "real+balanced+classic"
METRICS = ("test_bacc", "test_acc", "test_rare_recall")


def rows_of(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    results = json.load(open(path))
    table = pd.DataFrame(results["rows"]).assign(regime="draw")  # pair across regimes by the draw (subset seed)
    return table, np.asarray(results["data"]["test_labels"])


def main(ceiling_path: str, *study_paths: str) -> None:
    ceiling, labels = rows_of(ceiling_path)
    ceiling = ceiling[ceiling["arm"] == CEILING_ARM]
    print(f"ceiling ({CEILING_ARM} with the rare classes topped up to 200 with real images), means over draws "
          + ", ".join(f"{m} {ceiling[m].mean():.3f}" for m in METRICS if m != "test_rare_recall"))
    for path in study_paths:
        study, _ = rows_of(path)
        rare = [f"recall_{c}" for c in study["rare_classes"].iloc[0]]
        ceiling = ceiling.assign(test_rare_recall=ceiling[rare].mean(axis=1))
        seeds = sorted(set(study["subset_seed"]) & set(ceiling["subset_seed"]))
        print(f"\n{path}: draws {seeds}")
        top, base = study[study["arm"] == "real+topup+balanced+classic"], study[study["arm"] == "real+balanced+classic"]
        if len(top) and top["test_bacc"].notna().all():
            gains = [paired_gain(top, base, m, labels if m == "test_acc" else None) for m in METRICS]
            print("  real+topup+balanced+classic vs real+balanced+classic: " + "; ".join(
                f"{m} {100 * g['mean']:+.1f} [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}] over {g['units']} draws ({g['pairs']} pairs)"
                for m, g in zip(METRICS, gains)))
        for arm in sorted(set(study["arm"]) - {"real", "real+classic"}):
            mine = study[study["arm"] == arm]
            if "test_bacc" not in mine or mine["test_bacc"].isna().all():
                continue  # val-only rows
            gains = [paired_gain(ceiling, mine, m, labels if m == "test_acc" else None) for m in METRICS]
            print(f"  ceiling vs {arm}: " + "; ".join(
                f"{m} {100 * g['mean']:+.1f} [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}] over {g['units']} draws ({g['pairs']} pairs)"
                for m, g in zip(METRICS, gains)))


if __name__ == "__main__":
    main(*sys.argv[1:])
