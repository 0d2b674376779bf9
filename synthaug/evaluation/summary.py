"""The numbers of an evaluation: mean and spread per arm, gains over the baselines with intervals over independent
units, and the best arm without synthetic data, chosen on val.

A unit is a real training subset with its own generator (`regime`, `subset_seed`); the classifier seeds inside it
are averaged first (see intervals.py). Where each row keeps its test predictions (`test_pred`), the intervals of test
ACC and balanced-ACC gains also cover the test set's own sampling noise; where it keeps its per-image AUC terms
(`test_auc_terms`, DeLong's components: harness.auc_terms), so do those of AUC gains. A gain whose rows lack them
(older reports and cached arms) covers the units only, and says so (`test_noise`).
The headline gain is on the selection metric's kind: balanced ACC when `evaluate.select_on` is bacc, else ACC.
A score that is missing (nan: an arm cached before the metric existed) is never compared: such units are left out and
counted, and an arm without a val score leaves the choice of the best baseline "not scored".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthaug.evaluation.intervals import balanced_weights, gain_interval, resampled_interval, t_interval, verdict
from synthaug.evaluation.regimes import PLAIN_BASELINES, is_non_synthetic
from synthaug.recipe.sections import EvaluateConfig

UNIT = ["regime", "subset_seed"]  # what is independent: one real subset and the generator trained on it
PAIR = [*UNIT, "seed"]  # an arm and its baseline trained on the same subset with the same classifier seed
METRICS = ("acc", "auc", "bacc", "f1", "rare_recall")  # of every row where present (val has acc, auc and bacc)
GAIN_METRICS = ("acc", "auc", "bacc")
# the metrics that are a mean of per-image terms (see `per_image_terms`), each with the row field they come from
PER_IMAGE_METRICS = {"test_acc": "test_pred", "test_bacc": "test_pred", "test_auc": "test_auc_terms"}
PER_IMAGE_FIELDS = tuple(dict.fromkeys(PER_IMAGE_METRICS.values()))  # long lists, one entry a test image: no table shows them


HEADLINE_NAMES = {"acc": "ACC", "bacc": "balanced ACC"}  # a verdict's metric, as sentences name it


def verdict_accuracy(select_on: str) -> str:
    """The accuracy a verdict is on: balanced ACC ("bacc") when checkpoints and baselines are selected on balanced
    accuracy, else plain ACC ("acc"), under AUC selection too: AUC picks checkpoints, a verdict states an accuracy."""
    return "bacc" if select_on == "bacc" else "acc"


def summarise(rows: list[dict], cfg: EvaluateConfig, test_labels: np.ndarray | None = None, split: str = "test") -> dict:
    """Mean/std per regime x arm; gains over each baseline present and over the best of them (chosen on val), each
    with its interval over units and a verdict; the synthetic-only arm's accuracy relative to real-only (CAS ratio).
    `test_labels`: the test split's labels, to add the test set's sampling noise to test gains (`paired_gain`).
    `split`: "val" to summarise the val numbers instead (a sweep's lever tries, which report val only)."""
    table = rows_table(rows)
    summary, gains, best = [], [], {}
    overlap = cfg.resample.fraction if cfg.resample is not None else None  # units drawn from one split share images
    for (regime, arm), group in table.groupby(["regime", "arm"], sort=False):
        summary.append({
            "regime": regime, "arm": arm, "n_real": float(group["n_real_used"].mean()), "n_synthetic": float(group["n_synthetic"].mean()),
            "runs": len(group), "units": int(group["subset_seed"].nunique()), "steps": int(group["steps"].iloc[0]),
            **{f"{m}_{stat}": float(getattr(group[f"{split}_{m}"], stat)(ddof=1) if stat == "std" else group[f"{split}_{m}"].mean())
               for m in METRICS if f"{split}_{m}" in group for stat in ("mean", "std")},
        })
    for regime, group in table.groupby("regime", sort=False):
        by_arm = {arm: g for arm, g in group.groupby("arm", sort=False)}
        present = [b for b in PLAIN_BASELINES if b in by_arm]
        candidates = [a for a in by_arm if is_non_synthetic(a)]  # real+pseudo arms too: they may use the pool
        compared = {}  # (arm, vs) -> its gain entry: each comparison is written once
        for base in present:
            for arm in by_arm:
                if arm == base or (base != "real" and arm in PLAIN_BASELINES):  # "real vs real+classic" is the reverse of a row above
                    continue
                compared[arm, base] = {"regime": regime, "arm": arm, "vs": base, **split_gains(by_arm[arm], by_arm[base], split, test_labels, overlap)}
        if candidates:
            # The strongest arm without synthetic data, judged on val (the selection metric) only: test never picks it.
            val = group.get(f"val_{cfg.select_on}", pd.Series(np.nan, index=group.index))
            val_of = {b: float(val[by_arm[b].index].mean()) for b in candidates}
            entry = {"arm": None, "val": val_of, "select_on": cfg.select_on}
            # arms with a run that has no val score (cached before the metric existed): pandas' mean would skip it
            unscored = [a for a in by_arm if val[by_arm[a].index].isna().any()]
            if unscored:
                entry["unscored"] = unscored
            if not set(unscored) & set(candidates):  # an unscored candidate might be the strongest: then no choice
                chosen = max(candidates, key=lambda b: val_of[b])  # ties: the first, `real`
                entry["arm"] = chosen
                for arm in by_arm:
                    if not is_non_synthetic(arm):
                        compared.setdefault((arm, chosen), {"regime": regime, "arm": arm, "vs": chosen,
                                                             **split_gains(by_arm[arm], by_arm[chosen], split, test_labels, overlap)})
                        compared[arm, chosen]["best_baseline"] = True
            if "synthetic" in by_arm and "real" in by_arm:
                entry["cas"] = _unit_ratio(by_arm["synthetic"], by_arm["real"], f"{split}_acc")
            best[regime] = entry
        gains += compared.values()
    return {"rows": rows, "split": split, "summary": summary, "gains": gains, "best_baseline": best}


def rows_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table, without each arm's val curve."""
    return pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in rows])


def val_only_rows(rows: list[dict]) -> list[dict]:
    """The rows without their test fields (a sweep's lever tries report val only)."""
    return [{k: v for k, v in r.items() if not k.startswith(("test_", "recall_"))} for r in rows]


def paired_gain(rows: pd.DataFrame, base: pd.DataFrame, column: str, test_labels: np.ndarray | None = None,
                overlap: float | None = None) -> dict:
    """`column` of `rows` minus that of `base`, paired by (regime, subset, classifier seed), the seeds averaged within
    each unit, with its interval over the units both have and its verdict: {"mean", "lo", "hi", "units", "pairs",
    "test_noise", "unscored", "verdict", ...}. With `test_labels`, a test ACC or balanced-ACC gain (`test_pred` in
    every row) and an AUC gain (`test_auc_terms` in every row) add the test set's sampling noise. Units whose
    difference is nan are left out ("unscored").
    The one paired difference of evaluate, sweep and their reports."""
    both = rows.set_index(PAIR).join(base.set_index(PAIR).add_suffix("_base"), how="inner")
    both = both.reset_index()
    both["diff"] = both[column] - both[f"{column}_base"]
    unit_diffs = both.groupby(UNIT, sort=True)["diff"].mean()
    per_image = None
    field = PER_IMAGE_METRICS.get(column)
    if (field is not None and test_labels is not None and field in both and f"{field}_base" in both
            and both[field].notna().all() and both[f"{field}_base"].notna().all()):
        both["per_image"] = [per_image_terms(a, test_labels, column) - per_image_terms(b, test_labels, column)
                             for a, b in zip(both[field], both[f"{field}_base"])]
        per_image = np.stack([np.mean(list(g), axis=0) for _, g in both.groupby(UNIT, sort=True)["per_image"]])
        # AUC terms are kept to 6 significant digits: each unit's terms are moved onto its exact difference (a shift
        # of about 1e-7 that leaves their spread as it is), so that the gain is the difference of the reported AUCs
        per_image += (unit_diffs.to_numpy() - per_image.mean(1))[:, None]
    interval = gain_interval(unit_diffs.to_numpy(), per_image, test_labels if column == "test_bacc" else None)  # bacc: per class
    if overlap is not None:  # the units are subsamples of this fraction of one split (evaluate.resample)
        interval = resampled_interval(interval, unit_diffs.to_numpy(), overlap)
    return {**interval, "pairs": len(both), "verdict": verdict(interval)}


def per_image_terms(kept, labels: np.ndarray, column: str) -> np.ndarray:
    """Each test image's term of `column`, whose mean is the metric, from the row's field for it (`PER_IMAGE_METRICS`):
    for test_acc and test_bacc, `kept` is the predicted classes, and a term is 1 where right, else 0, for balanced ACC
    weighted N / (K n_c) by the image's class; for test_auc, `kept` is the terms themselves (harness.auc_terms)."""
    if column == "test_auc":
        return np.asarray(kept, dtype=float)
    correct = (np.asarray(kept) == labels).astype(float)
    return correct * balanced_weights(labels) if column == "test_bacc" else correct


def split_gains(rows: pd.DataFrame, base: pd.DataFrame, split: str = "test", test_labels: np.ndarray | None = None,
                overlap: float | None = None) -> dict:
    """ACC, AUC and (where the rows have them) balanced-ACC and rare-class-recall gains of `rows` over `base` on `split`
    as flat fields: dacc, dacc_lo, dacc_hi, dacc_verdict, dacc_test_noise, dacc_unscored (units left out of that gain:
    no score), ..., dbacc, ... and the numbers of units both arms have and of pairs."""
    entry = {}
    # rare-class recall where the subsets have rare classes (long-tailed draws; nan elsewhere): what a long-tailed user
    # asks of a top-up beside balanced accuracy; its interval covers the subsets only (no per-image terms)
    recall = f"{split}_rare_recall"
    rare = ("rare_recall",) if all(recall in t and t[recall].notna().any() for t in (rows, base)) else ()
    for m in (m for m in (*GAIN_METRICS, *rare) if f"{split}_{m}" in rows and f"{split}_{m}" in base):
        g = paired_gain(rows, base, f"{split}_{m}", test_labels, overlap)
        entry.update({f"d{m}": g["mean"], f"d{m}_lo": g["lo"], f"d{m}_hi": g["hi"], f"d{m}_verdict": g["verdict"],
                      f"d{m}_test_noise": g["test_noise"], f"d{m}_unscored": g["unscored"], "units": g["units"] + g["unscored"], "pairs": g["pairs"]})
    if overlap is not None:
        entry["overlap"] = overlap
    return entry


def unit_values(rows: pd.DataFrame, column: str) -> pd.Series:
    """`column` averaged over the classifier seeds of each unit."""
    return rows.groupby(UNIT, sort=True)[column].mean()


def _unit_ratio(num: pd.DataFrame, den: pd.DataFrame, column: str) -> dict:
    """`column` (an ACC) of `num` over that of `den`, per unit (seeds averaged), with a t interval of the mean ratio."""
    a, b = unit_values(num, column), unit_values(den, column)
    units = a.index.intersection(b.index)
    r = t_interval((a[units] / b[units]).to_numpy())
    return {"ratio": r["mean"], "lo": r["lo"], "hi": r["hi"], "units": r["units"]}
