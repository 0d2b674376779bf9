"""The cross-site study's table (reports/cross-site/): per regime and release, B's best real-only arm, each release arm,
model sharing and the raw-sharing ceiling, with intervals over B's independent subsets; the release arm chosen on val
against the best real-only arm, against model sharing, and the share of the ceiling's gain it recovers. Reads the
results.json of each release's `synthaug experiment` (no training):

    python benchmarks/cross_site.py reports/cross-site/release-g0/results.json reports/cross-site/release-g1/results.json

The unit is B's subset (its regime and subset seed): disjoint blocks of B's reserve, none seen by A. The share of the
ceiling is the mean release gain over the mean ceiling gain (both over the best real-only arm), with a t interval of
the per-subset shares beside it.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from synthaug.evaluation.intervals import t_interval
from synthaug.evaluation.regimes import is_non_synthetic, is_reference
from synthaug.evaluation.summary import UNIT, paired_gain

CEILING, SHARING = "real+site-a+classic", "model-sharing+classic"


def points(g: dict) -> str:
    return f"{100 * g['mean']:+.1f} [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}]"


def table(path: str) -> list[str]:
    results = json.load(open(path))
    rows, labels = pd.DataFrame(results["rows"]), np.asarray(results["data"]["test_labels"])
    lines = [f"## {path}", ""]
    audit = results["data"]["regimes"][0].get("audit") or {}
    generator = results["data"]["regimes"][0].get("generator", "?")
    if audit:  # how good A's generator is, beside what B gains from it
        lines += [f"A's release: {generator}. Audit: FD {audit.get('fd_synthetic', float('nan')):.3g} (real val {audit.get('fd_val', float('nan')):.3g}), "
                  f"label fidelity {100 * (audit.get('label_fidelity') or float('nan')):.1f} % (real val "
                  f"{100 * (audit.get('label_fidelity_real_val') or float('nan')):.1f} %), near-copies {100 * audit['flagged_fraction']:.2f} % "
                  f"(real val {100 * audit['real_val_over_threshold']:.2f} %)", ""]
    for regime, group in rows.groupby("regime", sort=False):
        arms = {a: g for a, g in group.groupby("arm", sort=False)}
        best = results["best_baseline"][regime]["arm"]
        release_arms = [a for a in arms if not is_non_synthetic(a) and not is_reference(a)]
        chosen = max(release_arms, key=lambda a: arms[a]["val_acc"].mean())  # val picks, test only scores
        units = group.groupby(UNIT).ngroups
        lines += [f"### {regime} ({units} subsets of B; best real-only arm on val: `{best}`)", "",
                  "| arm | test ACC | vs best real-only, points [95 % CI] |", "|---|---|---|"]
        for arm, g in arms.items():
            gain = "—" if arm == best else points(paired_gain(g, arms[best], "test_acc", labels))
            mark = " (chosen on val)" if arm == chosen else " (reference)" if is_reference(arm) else ""
            lines.append(f"| `{arm}`{mark} | {g['test_acc'].mean():.3f} | {gain} |")
        lines.append("")
        if CEILING in arms:
            mine = paired_gain(arms[chosen], arms[best], "test_acc", labels)
            ceiling = paired_gain(arms[CEILING], arms[best], "test_acc", labels)
            per_unit = ((arms[chosen].groupby(UNIT)["test_acc"].mean() - arms[best].groupby(UNIT)["test_acc"].mean())
                        / (arms[CEILING].groupby(UNIT)["test_acc"].mean() - arms[best].groupby(UNIT)["test_acc"].mean()))
            share = t_interval(per_unit.to_numpy())
            lines.append(f"- share of the ceiling's gain recovered by `{chosen}`: {100 * mine['mean'] / ceiling['mean']:.0f} % "
                         f"(per-subset shares {100 * share['mean']:.0f} % [{100 * share['lo']:.0f}, {100 * share['hi']:.0f}])")
        if SHARING in arms:
            lines.append(f"- `{chosen}` vs model sharing: {points(paired_gain(arms[chosen], arms[SHARING], 'test_acc', labels))} points")
        lines.append("")
    return lines


if __name__ == "__main__":
    print("\n".join(line for path in sys.argv[1:] for line in table(path)))
