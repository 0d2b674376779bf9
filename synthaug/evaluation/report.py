"""report.md of `synthaug evaluate`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from synthaug.core.formatting import mean_std, percent, significant
from synthaug.evaluation.intervals import MIN_UNITS
from synthaug.evaluation.regimes import PLAIN_BASELINES, is_reference
from synthaug.evaluation.summary import verdict_accuracy


VERDICT_WORDS = {"higher": "higher", "lower": "**lower**", "no difference shown": "no difference shown", "too few units": "too few units",
                 "not scored": "not scored"}
LABELS = {"acc": "ACC", "auc": "AUC", "bacc": "BACC", "f1": "macro-F1", "rare_recall": "rare-class recall"}


def gain_ci(entry: dict, m: str) -> str:
    """A gain in points with its interval and its verdict, as two table cells; a loss is never shown as good news."""
    lo, hi = entry[f"d{m}_lo"], entry[f"d{m}_hi"]
    interval = "[no interval: one subset]" if math.isnan(lo) else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return (f"{100 * entry[f'd{m}']:+.1f} {interval} | "
            f"{VERDICT_WORDS.get(entry.get(f'd{m}_verdict'), entry.get(f'd{m}_verdict', ''))}")


def best_synthetic(results: dict, regime: str) -> dict | None:
    """The gain entry over the best baseline of the synthetic arm with the highest mean val (selection metric) in
    `regime`: val picks it, test only scores it. None when the regime has no synthetic arm."""
    entries = [g for g in results["gains"] if g.get("best_baseline") and g["regime"] == regime and not is_reference(g["arm"])]
    if not entries:
        return None
    metric = results["config"]["select_on"]
    val = pd.DataFrame(results["rows"]).groupby(["regime", "arm"])[f"val_{metric}"].mean()
    return max(entries, key=lambda g: val[(regime, g["arm"])])  # ties: the first


def gain_metrics(results: dict) -> list[str]:
    """The gains a report shows, the headline (the verdict's metric) first: ACC, AUC and BACC where the rows have it."""
    first = verdict_accuracy(results["config"]["select_on"])
    have = [m for m in ("acc", "auc", "bacc") if any(f"d{m}" in g for g in results["gains"])]
    return [first, *(m for m in have if m != first)] if first in have else have


def _points_interval(g: dict, m: str) -> str:
    """A gain's interval in points, or why there is none (one subset, or none scored)."""
    if g[f"d{m}_verdict"] == "not scored":
        return "(no subset has this score)"
    if math.isnan(g[f"d{m}_lo"]):
        return "(no interval from one subset)"
    return f"[95 % CI {100 * g[f'd{m}_lo']:+.1f}, {100 * g[f'd{m}_hi']:+.1f}]"


def verdicts(results: dict) -> list[str]:
    """One sentence per regime: does synthetic data help against the best baseline chosen on val? "helps" needs the
    interval's lower bound above 0 over at least MIN_UNITS independent subsets; fewer units is "too few to tell".
    On balanced ACC when `select_on` is bacc, else on ACC. A regime whose choices or headline score lack a score
    (arms cached before the metric existed) is "not scored", never a verdict."""
    sentences, split = [], results.get("split", "test")
    select_on = results["config"]["select_on"]
    for regime, chosen in (results.get("best_baseline") or {}).items():
        if chosen.get("unscored"):
            sentences.append(f"{regime}: not scored: no val {LABELS[select_on]} for " + ", ".join(f"`{a}`" for a in chosen["unscored"])
                             + " (cached before the metric existed), so the arms cannot be chosen on val; "
                               "evaluate again with --force to score them.")
            continue
        g = best_synthetic(results, regime)
        if g is None:
            continue
        m = verdict_accuracy(select_on)
        m = m if f"d{m}" in g else "acc"
        unscored = g.get(f"d{m}_unscored", 0)
        numbers = (f"`{g['arm']}` (the synthetic arm chosen on val) vs `{g['vs']}` (the best baseline chosen on val): "
                   f"{100 * g[f'd{m}']:+.1f} points {split} {LABELS[m]} {_points_interval(g, m)} "
                   f"over {g['units'] - unscored} {_unit_words(g)}"
                   + (f" ({unscored} more without a {split} {LABELS[m]}, left out)" if unscored else ""))
        if split == "val":  # a sweep's lever try: it informs a choice and concludes nothing
            sentences.append(f"{regime}: val only (a lever try; test is not looked at here): {numbers}.")
            continue
        cost = "balanced accuracy" if m == "bacc" else "accuracy"
        word = {"higher": "synthetic data helps", "lower": f"synthetic data does not help (it costs {cost})",
                "no difference shown": "synthetic data does not help (no gain shown)",
                "too few units": f"too few independent subsets to tell (fewer than {MIN_UNITS})",
                "not scored": f"not scored (no subset has a {split} {LABELS[m]}: evaluate again with --force)"}[g[f"d{m}_verdict"]]
        sentences.append(f"{regime}: {word}; {numbers}.")
    return sentences


def grid_name(run: str) -> str:
    """The file name of a run's real-beside-synthetic grid in a report folder."""
    return f"samples_{Path(run).name}.png"


def render_evaluate_report(results: dict, notes: str | None = None) -> str:
    cfg, data, hw = results["config"], results["data"], results["hardware"]
    seeds, split = cfg["seeds"], results.get("split", "test")
    split_name = "Test" if split == "test" else "Val (a sweep's lever try: test is not reported)"
    lines = [f"# synthaug evaluate: {data['source']}", "",
             "Generated by `synthaug evaluate`; every number below comes from the runs and commands listed here.", ""]
    lines += ["## Verdict", "", *([f"- {v}" for v in verdicts(results)] or ["- No synthetic arm was evaluated."]), ""]
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines += ["## Commands", "", "```bash", *results["commands"], "```", "",
              "## Set-up", "",
              f"- Hardware: {hw['cpu']} ({hw['cpu_count']} cores, {hw['torch_threads']} torch threads), device `{hw['device']}`"
              + (f", GPU {hw['gpu']}" if hw["gpu"] else "") + f"; torch {hw['torch']}, synthaug {hw['synthaug']}.",
              f"- Classifier: `{cfg['classifier']}`" + (f" (width {cfg['width']})" if cfg["classifier"] == "small_cnn" else "")
              + f", Adam lr {cfg['lr']:g}, x{cfg['gamma']:g} at {', '.join(f'{m:.0%}' for m in cfg['milestones'])} of "
              f"**{cfg['steps']} steps for every arm**, batch {cfg['batch_size']}, checkpoint chosen on val {cfg['select_on'].upper()} "
              f"every {cfg['eval_every'] or max(1, cfg['steps'] // 10)} steps, test scored once per arm.",
              f"- Seeds: {seeds}; classic augmentation: {cfg['classic']}.",
              *_rebalance_lines(cfg),
              f"- Real val / test images: {data['val']} {data['val_per_class']} / {data['test']} {data['test_per_class']} "
              f"(classes {data['class_names']}).",
              f"- Wall time: {results['wall_s_arms']:.0f} s of classifier training over {len(results['rows'])} arms "
              f"({results['arms_from_cache']} read from the cache); this invocation {results['wall_s_this_run']:.0f} s.", "",
              "| regime | run | subset seed | real train (per class) | synthetic available (per class) | generator |",
              "|---|---|---|---|---|---|"]
    for r in data["regimes"]:
        lines.append(f"| {r['regime']} | `{r['run']}` | {r['subset_seed']} | {r['real_train']} {r['real_per_class']} | "
                     f"{r['synthetic_available']} | {r['generator']} |")
    units = pd.DataFrame(results["rows"]).groupby("regime")["subset_seed"].nunique().min()
    if units < MIN_UNITS:  # the unit of every interval: a real subset with its own generator
        lines += ["", f"**{units} independent subset(s) in a regime: too few to tell whether synthetic data helps (the "
                  f"verdict needs {MIN_UNITS}); classifier seeds inside a subset are not independent units.**"]
    shown = [m for m in LABELS if f"{m}_mean" in results["summary"][0]]
    lines += ["", f"## {split_name} accuracy, AUC and balanced scores (mean ± std over seeds and subsets)", "",
              "BACC: balanced accuracy (mean recall over the classes); rare-class recall: mean recall of the classes whose real "
              f"training count is below evaluate.rare_below ({cfg.get('rare_below', 60)}), — where a regime has none.", "",
              "| regime | arm | real | synthetic | steps | runs | " + " | ".join(LABELS[m] for m in shown) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(shown)]
    for s in results["summary"]:
        lines.append(f"| {s['regime']} | {s['arm']} | {s['n_real']:.0f} | {s['n_synthetic']:.0f} | {s['steps']} | {s['runs']} | "
                     + " | ".join(mean_std(s[f"{m}_mean"], s[f"{m}_std"]) for m in shown) + " |")
    gained = gain_metrics(results)
    lines += ["", "## Gain over the baselines", "", *interval_note(results), "",
              "| regime | arm | vs | subsets (pairs) | " + " | ".join(f"Δ{LABELS[m]}, points [95 % CI] | verdict" for m in gained) + " |",
              "|---|---|---|---|" + "---|---|" * len(gained)]
    for g in results["gains"]:
        if g["vs"] in PLAIN_BASELINES:
            lines.append(f"| {g['regime']} | {g['arm']} | {g['vs']} | {_units(g)} | " + " | ".join(gain_ci(g, m) for m in gained) + " |")
    lines += _best_baseline_lines(results)
    recall_cols = [k for k in results["rows"][0] if k.startswith("recall_")]
    if recall_cols:
        lines += _recall_lines(results, recall_cols)
    lines += _audit_lines(data["regimes"])
    lines += ["", "## Plots", "", "![accuracy vs training-set size](accuracy_vs_size.png)", ""]
    for r in data["regimes"]:
        lines.append(f"![real beside synthetic, {r['regime']}]({grid_name(r['run'])})")
    lines += ["", "Files: `results.csv` (one row per regime x arm x seed), `results.json` (everything, with the val "
              "curve of each arm), `cache/` (finished arms; delete or pass `--force` to redo)."]
    return "\n".join(lines) + "\n"


def _rebalance_lines(cfg: dict) -> list[str]:
    """The settings of the re-balancing and top-up arms, when the report has any."""
    arms = cfg["arms"]
    said = []
    if any("logit_adjusted" in a for a in arms):
        said.append(f"logit-adjusted loss tau {cfg['logit_tau']:g} (Menon et al. 2021)")
    if any("reweight_effective" in a for a in arms):
        said.append(f"effective-number weights beta {cfg['effective_beta']:g} (Cui et al. 2019)")
    if any("topup" in a for a in arms):
        target = "the largest class's real count" if cfg["top_up"] == "balance" else f"{cfg['top_up']} images"
        said.append(f"real+topup arms: every class topped up with synthetic images to {target}")
    if any("replace" in a for a in arms) and cfg.get("replace_p_by_class"):
        said.append(f"real+replace p per class: {cfg['replace_p_by_class']}")
    return [f"- Re-balancing: {'; '.join(said)}; class weights and priors count what each arm trains on."] if said else []


def _recall_lines(results: dict, recall_cols: list[str]) -> list[str]:
    names = results["data"]["class_names"]
    rare = {r["regime"]: r.get("rare_classes") for r in results["data"]["regimes"]}
    lines = ["", "## Per-class test recall (mean over seeds)", "",
             *[f"Rare classes of {regime} (real training count below evaluate.rare_below, {results['config'].get('rare_below', 60)}): "
               + (", ".join(names[c] for c in classes) or "none") for regime, classes in rare.items() if classes is not None], "",
             "| regime | arm | " + " | ".join(names[int(k.split('_')[1])] for k in recall_cols) + " |",
             "|---|---|" + "---|" * len(recall_cols)]
    table = pd.DataFrame(results["rows"])
    for (regime, arm), group in table.groupby(["regime", "arm"], sort=False):
        lines.append(f"| {regime} | {arm} | " + " | ".join(f"{group[k].mean():.3f}" for k in recall_cols) + " |")
    return lines


def _units(g: dict) -> str:
    return f"{g['units']} ({g['pairs']})"


def interval_note(results: dict) -> list[str]:
    """What the intervals cover, in words, metric by metric: each statement true of these rows."""
    gains, split = results["gains"], results.get("split", "test")
    metrics = [m for m in ("acc", "bacc", "auc") if any(f"d{m}" in g for g in gains)]
    noise = {m: [bool(g.get(f"d{m}_test_noise")) for g in gains if f"d{m}" in g] for m in metrics}
    covered = [f"Δ{LABELS[m]}" for m in metrics if all(noise[m])]
    partly = [f"Δ{LABELS[m]}" for m in metrics if any(noise[m]) and not all(noise[m])]
    said = []
    if covered:
        sources = (["each run's per-image test predictions" + (", each image weighted N / (K n_c) for balanced accuracy"
                                                                if "ΔBACC" in covered else "")] if set(covered) - {"ΔAUC"} else [])
        sources += ["each image's DeLong components for AUC"] if "ΔAUC" in covered else []
        said.append(f"{' and '.join(covered)} also cover the test set's own sampling noise (two-way: subsets × test images, from "
                    f"{'; and '.join(sources)})")
    if partly:
        said.append(f"{' and '.join(partly)} cover it only where both arms' rows keep their per-image predictions or AUC terms")
    for m in metrics:
        if any(noise[m]):
            continue
        why = ("the val predictions are not kept" if split == "val"
               else "these rows keep no per-image AUC terms" if m == "auc" else "these rows keep no per-image predictions")
        said.append(f"Δ{LABELS[m]} covers the subsets only, **not** the {split} set's own sampling noise ({why})")
    return ["Intervals: 95 %, Student t over independent units — a unit is a real training subset with its own generator; "
            "the classifier seeds inside a subset are averaged first, never counted as units. They cover the choice of "
            "the subset (and its generator), the classifier's initialisation and batch order. " + "; ".join(said) + ".",
            f"Verdict: higher / lower when the interval lies above / below 0 over at least {MIN_UNITS} subsets; with fewer, "
            "\"too few units\"; a subset without the score (an arm cached before the metric existed) is left out and counted, "
            "and with none scored the verdict is \"not scored\" (coverage measured by simulation: tests/test_intervals.py, "
            "benchmarks/interval_coverage.py)."] + _overlap_note(gains)


def _unit_words(g: dict) -> str:
    """How a verdict names its units: independent subsets, or overlapping subsamples of one split (evaluate.resample)."""
    if g.get("overlap") is None:
        return "independent subset(s)"
    return f"overlapping subsamples ({100 * g['overlap']:g} % of each class of one training split; corrected resampled t)"


def _overlap_note(gains: list[dict]) -> list[str]:
    """evaluate.resample: why its intervals are wider than a plain t over its units."""
    fractions = sorted({g["overlap"] for g in gains if g.get("overlap") is not None})
    if not fractions:
        return []
    f = fractions[0]
    return [f"Units overlap: each is a subsample of {100 * f:g} % of every class of one training split (evaluate.resample), "
            "with its own generator and classifier seeds (unit k: evaluate.seeds shifted by k times their span). A plain t over them would miss what they share (the dataset "
            "itself), so the intervals are the corrected resampled t of Nadeau & Bengio (2003): the units' variance "
            f"s²/K is widened to s² (1/K + f/(1 − f)) = s² (1/K + {f / (1 - f):.2g}), exact when the units differ only by "
            "which images they drew and wider than needed when their seeds add noise of their own "
            "(synthaug/evaluation/intervals.py). The verdict is about a training set of this size drawn from the population "
            "your images come from."]


def _best_baseline_lines(results: dict) -> list[str]:
    """Gains over the best arm without synthetic data (chosen on val), and the CAS ratio."""
    best = results.get("best_baseline") or {}
    if not best:
        return []
    gained = gain_metrics(results)
    lines = ["", "## Gain over the best arm without synthetic data (chosen on val)", "",
             "Per regime, the arm without synthetic data (`real`, `real+classic`, a re-balancing arm such as `real+balanced`, "
             "or self-training `real+pseudo` on the unlabeled pool) with the highest mean val "
             f"{next(iter(best.values()))['select_on'].upper()}; test never enters the choice.", "",
             "| regime | best baseline (val) | arm | subsets (pairs) | " + " | ".join(f"Δ{LABELS[m]}, points [95 % CI] | verdict" for m in gained) + " |",
             "|---|---|---|---|" + "---|---|" * len(gained)]
    for g in results["gains"]:
        if g.get("best_baseline"):
            chosen = best[g["regime"]]
            val = ", ".join(f"{k} {v:.3f}" for k, v in chosen["val"].items())
            lines.append(f"| {g['regime']} | {g['vs']} ({val}) | {g['arm']} | {_units(g)} | " + " | ".join(gain_ci(g, m) for m in gained) + " |")
    for regime, chosen in best.items():
        if chosen["arm"] is None:
            lines.append(f"| {regime} | not chosen: no val {chosen['select_on'].upper()} for {', '.join(chosen['unscored'])} | | | "
                         + " | ".join(["— | not scored"] * len(gained)) + " |")
    cas = {regime: b["cas"] for regime, b in best.items() if "cas" in b}
    if cas:
        lines += ["", "Synthetic-only accuracy relative to real-only (CAS ratio: mean test ACC of `synthetic` / `real`, "
                  "per subset, 95 % t interval over the subsets):", ""]
        lines += [f"- {regime}: {c['ratio']:.3f} " + ("(no interval from one subset)" if math.isnan(c["lo"]) else f"[{c['lo']:.3f}, {c['hi']:.3f}]")
                  + f" ({c['units']} subsets)" for regime, c in cas.items()]
    return lines


def _audit_lines(regimes: list[dict]) -> list[str]:
    """The audit summary of each regime's synthetic set (`synthaug audit`), real baselines beside it."""
    lines = ["", "## Audit of the synthetic sets (synthetic / real test / real val)", ""]
    audited = [r for r in regimes if r.get("audit")]
    if not audited:
        return lines + ["Not audited: run `synthaug audit --run RUN` for each run, then evaluate again to include it here."]
    lines += ["Near-copies: synthetic images over their class's copy threshold, and the share of real val images over it. "
              "Label fidelity: the share of synthetic images the audit's judge (a classifier trained on the run's real training "
              "images) assigns to their own class, beside its share on real val images and the class where it is lowest "
              "(audit.md has every class).", "",
              "| regime | Fréchet distance | precision | recall | density | coverage | near-copies (real val over threshold) "
              "| label fidelity (real val) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in regimes:
        a = r.get("audit")
        if not a:
            lines.append(f"| {r['regime']} (subset seed {r['subset_seed']}) | not audited | | | | | | |")
            continue
        cells = [" / ".join(significant(a[f"{m}_{c}"], 3) for c in ("synthetic", "test", "val")) for m in ("fd", "precision", "recall", "density", "coverage")]
        copies = f"{a['flagged']} ({percent(a['flagged_fraction'])}; real val {percent(a['real_val_over_threshold'])})"
        stale = " **(set changed since the audit)**" if a["stale"] else ""
        lines.append(f"| {r['regime']} (subset seed {r['subset_seed']}){stale} | " + " | ".join(cells) + f" | {copies} | {_label_fidelity(a)} |")
    return lines


def _label_fidelity(audit: dict) -> str:
    """The label-fidelity cell of a regime's audit; n/a for audits summarised before it was recorded."""
    if audit.get("label_fidelity") is None:
        return "n/a"
    lowest = audit.get("label_fidelity_lowest")
    worst = f"; lowest: {lowest['class']} {percent(lowest['synthetic'])}, real val {percent(lowest['real_val'])}" if lowest else ""
    return f"{percent(audit['label_fidelity'])} (real val {percent(audit.get('label_fidelity_real_val'))}{worst})"
