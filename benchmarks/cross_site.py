"""The cross-site study's table (reports/cross-site/): per regime and release, B's best real-only arm, each release arm,
model sharing and the raw-sharing ceiling, with intervals over B's independent subsets; the release arm chosen on val
against the best real-only arm, against model sharing, and the share of the ceiling's gain it recovers. Reads the
results.json of each release's `synthaug experiment` (no training):

    python benchmarks/cross_site.py reports/cross-site/release-g0/results.json reports/cross-site/release-g1/results.json

With --scale, one row per release instead (reports/cross-site/scale.sh, privacy.sh): A's generator, its training
compute (steps x batch), its privacy, fidelity, and per regime the chosen release arm's gain and share of the ceiling.

The unit is B's subset (its regime and subset seed): disjoint blocks of B's reserve, none seen by A. The share of the
ceiling is the mean release gain over the mean ceiling gain (both over the best real-only arm), with a t interval of
the per-subset shares beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from synthaug.evaluation.intervals import t_interval
from synthaug.evaluation.regimes import is_non_synthetic, is_reference
from synthaug.evaluation.summary import UNIT, paired_gain

CEILING, SHARING = "real+site-a+classic", "model-sharing+classic"


def points(g: dict) -> str:
    return f"{100 * g['mean']:+.1f} [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}]"


def regime_arms(results: dict, rows: pd.DataFrame):
    """Per regime: (regime, its rows by arm, B's best real-only arm, the release arm val chose): val picks, test only scores."""
    for regime, group in rows.groupby("regime", sort=False):
        arms = {a: g for a, g in group.groupby("arm", sort=False)}
        chosen = max((a for a in arms if not is_non_synthetic(a) and not is_reference(a)), key=lambda a: arms[a]["val_acc"].mean())
        yield regime, arms, results["best_baseline"][regime]["arm"], chosen


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
    for regime, arms, best, chosen in regime_arms(results, rows):
        units = pd.concat(arms.values()).groupby(UNIT).ngroups
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


def scale_rows(paths: list[str]) -> list[str]:
    """One row per release: how A's generator was trained and how good it is, beside what B gains from it."""
    lines, header = [], None
    for path in paths:
        results = json.load(open(path))
        rows, labels = pd.DataFrame(results["rows"]), np.asarray(results["data"]["test_labels"])
        first = results["data"]["regimes"][0]
        audit = first.get("audit") or {}
        manifest = Path(first.get("synthetic_dir") or "", "release.json")
        release = json.loads(manifest.read_text()) if manifest.is_file() else {}
        privacy = release.get("privacy")
        epsilon = "∞" if not privacy else f"{privacy.get('epsilon_spent') or privacy['epsilon']:.3g} (δ {privacy['delta']:.0e})"
        cells = []
        for regime, arms, best, chosen in regime_arms(results, rows):
            gain = paired_gain(arms[chosen], arms[best], "test_acc", labels)
            share = (f"{100 * gain['mean'] / paired_gain(arms[CEILING], arms[best], 'test_acc', labels)['mean']:.0f} %"
                     if CEILING in arms else "—")
            cells.append((regime, f"{points(gain)} (`{chosen}`)", share))
        if header is None:
            header = [f"{r}: gain, points [95 % CI] (arm chosen on val) | {r}: share of ceiling" for r, _, _ in cells]
            lines += ["| A's generator | images seen | ε | FD | label fidelity | " + " | ".join(header) + " |",
                      "|---|---|---|---|---|" + "---|---|" * len(cells)]
        lines.append(f"| {first.get('generator', '?')} | {_images_seen(manifest.parent / 'recipe.yaml')} | {epsilon} | "
                     f"{audit.get('fd_synthetic', float('nan')):.2f} | {100 * (audit.get('label_fidelity') or float('nan')):.0f} % | "
                     + " | ".join(f"{g} | {s}" for _, g, s in cells) + " |")
    return lines


def _images_seen(recipe: Path) -> str:
    """The images A's generator trained on (steps x batch x accumulation), from the recipe the release carries."""
    if not recipe.is_file():
        return "?"
    train = yaml.safe_load(recipe.read_text()).get("train", {})
    return f"{train['steps'] * train['batch_size'] * train.get('gradient_accumulation_steps', 1):,}"


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--scale"]:
        print("\n".join(scale_rows(args[1:])))
    else:
        print("\n".join(line for path in args for line in table(path)))
