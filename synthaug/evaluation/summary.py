"""The numbers of an evaluation: mean and spread per arm, paired-bootstrap gains over the baselines, and the best
arm without synthetic data, chosen on val."""

from __future__ import annotations

import pandas as pd

from synthaug.recipe.sections import EvaluateConfig
from synthaug.evaluation.regimes import BASELINES, is_non_synthetic
from synthaug.evaluation.intervals import paired_bootstrap_ci, ratio_of_means_ci


def summarise(rows: list[dict], cfg: EvaluateConfig) -> dict:
    """Mean/std per regime x arm; paired-bootstrap gains over each baseline present and over the best of them
    (chosen on val); the synthetic-only arm's accuracy relative to real-only (CAS ratio)."""
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("curve", "test_pred")} for r in rows])
    summary, gains, best = [], [], {}
    for (regime, arm), group in table.groupby(["regime", "arm"], sort=False):
        summary.append({
            "regime": regime, "arm": arm, "n_real": float(group["n_real_used"].mean()), "n_synthetic": float(group["n_synthetic"].mean()),
            "runs": len(group), "steps": int(group["steps"].iloc[0]),
            **{f"{m}_{stat}": float(getattr(group[f"test_{m}"], stat)(ddof=1) if stat == "std" else group[f"test_{m}"].mean())
               for m in ("acc", "auc") for stat in ("mean", "std")},
        })
    for regime, group in table.groupby("regime", sort=False):
        by_arm = {arm: g.set_index(["subset_seed", "seed"]) for arm, g in group.groupby("arm", sort=False)}
        present = [b for b in BASELINES if b in by_arm]
        candidates = [a for a in by_arm if is_non_synthetic(a)]  # real+pseudo arms too: they may use the pool
        for base in present:
            for arm in by_arm:
                if arm == base or (base != "real" and arm in BASELINES):  # "real vs real+classic" is the reverse of a row above
                    continue
                gains.append(_paired_gain(regime, arm, base, by_arm[arm], by_arm[base], cfg.bootstrap))
        if not candidates:
            continue
        # The strongest arm without synthetic data, judged on val (the selection metric) only: test never picks it.
        val_of = {b: float(by_arm[b][f"val_{cfg.select_on}"].mean()) for b in candidates}
        chosen = max(candidates, key=lambda b: val_of[b])  # ties: the first, `real`
        entry = {"arm": chosen, "val": val_of, "select_on": cfg.select_on}
        for arm in by_arm:
            if not is_non_synthetic(arm):
                gains.append({**_paired_gain(regime, arm, chosen, by_arm[arm], by_arm[chosen], cfg.bootstrap), "best_baseline": True})
        if "synthetic" in by_arm and "real" in by_arm:
            entry["cas"] = _paired_ratio(by_arm["synthetic"], by_arm["real"], cfg.bootstrap)
        best[regime] = entry
    return {"rows": rows, "summary": summary, "gains": gains, "best_baseline": best}


def _paired_gain(regime: str, arm: str, base: str, other: pd.DataFrame, ref: pd.DataFrame, n_boot: int) -> dict:
    """Mean test ACC/AUC difference arm - base over the (subset, seed) pairs both have, with its bootstrap CI."""
    units = ref.index.intersection(other.index)
    entry = {"regime": regime, "arm": arm, "vs": base, "pairs": len(units)}
    for m in ("acc", "auc"):
        diffs = (other.loc[units, f"test_{m}"] - ref.loc[units, f"test_{m}"]).to_numpy()
        mean, lo, hi = paired_bootstrap_ci(diffs, n_boot)
        entry.update({f"d{m}": mean, f"d{m}_lo": lo, f"d{m}_hi": hi, f"d{m}_excludes_0": bool(lo > 0 or hi < 0)})
    return entry


def _paired_ratio(num: pd.DataFrame, den: pd.DataFrame, n_boot: int) -> dict:
    """Ratio of mean test ACC (num / den) over shared (subset, seed) pairs, with a percentile bootstrap CI of the pairs."""
    units = den.index.intersection(num.index)
    ratio, lo, hi = ratio_of_means_ci(num.loc[units, "test_acc"].to_numpy(float), den.loc[units, "test_acc"].to_numpy(float), n_boot)
    return {"ratio": ratio, "lo": lo, "hi": hi, "pairs": len(units)}
