"""sweep.md and val_by_lever.png of `synthaug sweep`, from the summary it writes as sweep.json."""

from __future__ import annotations

import numpy as np
import yaml
from matplotlib.figure import Figure

from synthaug.core.figures import figure_png
from synthaug.core.formatting import fixed, gain_points
from synthaug.evaluation.summary import HEADLINE_NAMES


def _interval(gain: dict) -> str:
    """A mean difference in points with its 95 % interval and its number of independent subsets: {mean, lo, hi, units}."""
    return f"{gain_points(gain['mean'], gain['lo'], gain['hi'])} over {gain['units']} subset(s)"


def classical_choice(answer: dict) -> str:
    """The best arm without synthetic images in words, with its classical augmentation."""
    arm = answer["baseline_arm"]
    if arm == "real+classic":
        settings = yaml.safe_dump(answer["classic"], default_flow_style=True, sort_keys=False, width=1000).strip()
        named = f"the sweep's `{answer['classic_name']}` setting, " if answer.get("classic_name") else ""
        return f"`real+classic`, the real images with classical augmentation ({named}evaluate.classic: `{settings}`)"
    if arm == "real":
        return "`real`, the real images without augmentation"
    return f"`{arm}`"


def _lever_rows(levers: list[dict], metric: str) -> list[str]:
    lines = [f"| lever | value | arm scored | subsets (pairs) | val {metric.upper()} [95 % CI] (chooses) | chosen | report |",
             "|---|---|---|---|---|---|---|"]
    for lever in levers:
        if not lever["entries"]:
            lines.append(f"| {lever['lever']} | — | — | — | not swept: {lever['skipped']} | | |")
        for e in lever["entries"]:
            if "val" not in e:
                lines.append(f"| {lever['lever']} | {e['value']} | — | — | not tried: {e['skipped']} | | |")
                continue
            lines.append(f"| {lever['lever']} | {e['value']} | {e['arm']} | {e.get('units', '?')} ({e['pairs']}) | {fixed(e['val'], 4)} "
                         f"[{fixed(e['val_lo'], 4)}, {fixed(e['val_hi'], 4)}] | {'**yes**' if e['chosen'] else ''} | "
                         f"[report]({e['report']}) |")
    return lines


def _test_noise(gain: dict) -> str:
    """What a test gain's interval covers beyond the subsets, said only where it does."""
    return " (the interval includes the test set's own sampling noise)" if gain.get("test_noise") else ""


def _answer_lines(answer: dict, metric: str, recipe_yaml: str | None) -> list[str]:
    gain, m = answer["val_gain"], metric.upper()
    check = answer.get("confirm")
    val = (f"On val (the data that made every choice, so optimistic), `{answer['synthetic_arm']}` scores {m} "
           f"{answer['val_synthetic']:.4f} against {answer['val_baseline']:.4f} for `{answer['baseline_arm']}`: {_interval(gain)}.")
    if check is None:
        lines = [f"**Not confirmed: synthetic data cannot be recommended yet.** {val} No subsets outside the sweep's "
                 "were evaluated, and a gain chosen on val is measured on test only on subsets that no choice saw."]
    else:
        hm = check.get("metric", "acc")
        name = HEADLINE_NAMES[hm]
        headline = check[f"gain_{hm}"]
        test = (f"On {headline['units']} real subsets that no choice saw (`{answer['confirm_report']}`), test {name} "
                f"{check.get('score', check['acc']):.4f} against {check.get('score_baseline', check['acc_baseline']):.4f}: "
                f"Δ{name} {_interval(headline)}{_test_noise(headline)}, "
                f"ΔAUC {_interval(check['gain_auc'])}{_test_noise(check['gain_auc'])}"
                + (f", Δrare-class recall {_interval(check['gain_rare_recall'])}" if "gain_rare_recall" in check else "") + ".")
        head = {"higher": f"**Use `{answer['synthetic_arm']}` with the settings below: it helps.**",
                "lower": f"**Synthetic data does not help this set at this scale (it costs accuracy); use {classical_choice(answer)}.**",
                "no difference shown": f"**Synthetic data does not help this set at this scale (no gain shown); use {classical_choice(answer)}.**",
                "too few units": f"**Too few independent subsets to tell whether synthetic data helps; until more are evaluated, use "
                                 f"{classical_choice(answer)}.**",
                "not scored": f"**Not scored: the confirmation's runs lack the test {name}; use {classical_choice(answer)}.**"}[check["verdict"]]
        lines = [head, "", test, "", val]
        if len(check.get("regimes", [])) > 1:  # the verdict is the weakest regime's; each regime with its own numbers
            lines[2:2] = ["Regime by regime (the answer above is the weakest regime's):", "",
                          *[f"- {c['regime']}: {c['verdict']}; Δ{name} {_interval(c[f'gain_{hm}'])}, test {name} {c['score']:.4f} against "
                            f"{c['score_baseline']:.4f}" for c in check["regimes"]], ""]
    lines += ["", f"Every arm of the chosen settings, on val: [final/report.md]({answer['report']})."]
    for s in answer.get("sets", []):
        lines.append(f"- `{s['run']}`: synthetic set `{s['synthetic']}`, real beside synthetic: [{s['grid']}]({s['grid']})")
    if recipe_yaml:
        lines += ["", "The chosen settings as a recipe ([recommended.yaml](recommended.yaml); run it with `synthaug experiment`):", "",
                  "```yaml", recipe_yaml.rstrip(), "```"]
    return lines


def render_sweep_markdown(summary: dict, recipe_yaml: str | None = None) -> str:
    metric, answer = summary["metric"], summary["recommendation"]
    lines = [f"# synthaug sweep: {summary['recipe']}", "",
             "Generated by `synthaug sweep`. Each lever was tried at every value with the levers above it at their chosen "
             f"values. Every choice was made on **val** (mean {metric.upper()} over every (regime, subset, seed) pair of the "
             "best arm with synthetic images; for `classic`, of `real+classic`); every lever try reports val only. Test was "
             "looked at once: the chosen synthetic arm against the chosen baseline, on real subsets that no choice saw.", "",
             "## Commands", "", "```bash", *summary["commands"], "```", "",
             "## Levers, in the order swept", "", *_lever_rows(summary["levers"], metric), "",
             "![val per lever value](val_by_lever.png)", "", "## Recommendation", ""]
    if answer is None:
        done = ", ".join(lever["lever"] for lever in summary["levers"]) or "none"
        lines.append(f"The sweep has not finished (levers done: {done}); run the same command again to go on.")
    else:
        lines += _answer_lines(answer, metric, recipe_yaml)
    lines += ["", "## Generators", "", "The last sample grid of each model (`samples/` of each run):", ""]
    for run, grids in summary["generators"].items():
        lines.append(f"- `{run}`: " + (", ".join(f"[{g.split('/')[-2]}]({g})" for g in grids) or "no grid yet"))
    return "\n".join(lines) + "\n"


def val_by_lever_png(levers: list[dict], metric: str) -> bytes:
    """One panel per swept lever: the mean val metric of each value's scored arm with its 95 % CI; the chosen value in red."""
    swept = [lever for lever in levers if any("val" in e for e in lever["entries"])]
    figure = Figure(figsize=(3.2 * max(1, len(swept)), 3.4), layout="tight")
    if not swept:
        figure.text(0.5, 0.5, "no lever value scored yet", ha="center", va="center")
        return figure_png(figure)
    axes = figure.subplots(1, len(swept), squeeze=False)[0]
    for ax, lever in zip(axes, swept):
        scored = [e for e in lever["entries"] if "val" in e]
        for x, e in enumerate(scored):
            bar = [[e["val"] - e["val_lo"]], [e["val_hi"] - e["val"]]]
            ax.errorbar([x], [e["val"]], yerr=np.nan_to_num(bar), marker="o", capsize=3,  # one subset: no interval, no bar
                        color="tab:red" if e["chosen"] else "tab:blue")
        ax.set_xticks(range(len(scored)), [e["value"] for e in scored], rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(scored) - 0.5)
        ax.set_title(lever["lever"], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"val {metric.upper()} (chosen: red)")
    return figure_png(figure)
