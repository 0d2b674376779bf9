"""The levers of `synthaug sweep`: what each value sets in a recipe, when a lever has no effect, and the choices on val.

A *candidate* is the recipe with the levers chosen so far and one value of the lever being swept. Every lever
value is scored by the mean val metric (`evaluate.select_on`) of its best arm over every (regime, subset, seed)
pair: the best arm that uses synthetic images, or for `classic` the `real+classic` arm. Test never enters a choice:
the chosen arm meets test once, in `confirm`, on subsets that no choice saw.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pandas as pd

from synthaug.core.errors import UserError
from synthaug.recipe.arms import USAGE_ARMS, arm_spec
from synthaug.recipe.sections import GENERATOR_LEVERS, SweepConfig
from synthaug.recipe.recipe import Recipe, recipe_from_dict
from synthaug.evaluation.regimes import PLAIN_BASELINES
from synthaug.storage.rundir import safe_name
from synthaug.evaluation.intervals import t_interval
from synthaug.evaluation.summary import verdict_accuracy, paired_gain, rows_table, unit_values

FIT_LEVERS = ("conditioning", "augment", "balanced_batches")  # a new value needs new generators; the others only resample or reuse them
ADD_ARMS = ("real+synthetic", "real+synthetic+classic", "real+synthetic+soft", "real+synthetic+soft+classic")
REPLACE_ARMS = ("real+replace", "real+replace+classic")
# Where a plain lever's value goes in the recipe; classic, source, usage and ratio are set by `_apply`.
FIELDS = {"conditioning": ("model", "conditioning"), "augment": ("train", "augment"), "balanced_batches": ("train", "balanced_batches"),
          "strength": ("generate", "strength"),
          "guidance_scale": ("generate", "guidance_scale"), "steps": ("generate", "steps"),
          "filter_confidence": ("generate", "filter_confidence"), "replace_variations": ("evaluate", "replace_variations")}


@dataclass(frozen=True)
class Value:
    """One value of a lever: its name (table rows, report folders) and its setting as the sweep section gives it."""

    lever: str
    name: str
    setting: object


def value_name(setting) -> str:
    if setting is None:
        return "off"
    if isinstance(setting, list):
        return "+".join(value_name(s) for s in setting) or "none"
    return f"{setting:g}" if isinstance(setting, float) else str(setting)


def lever_values(cfg: SweepConfig, lever: str) -> list[Value]:
    values = getattr(cfg, lever)
    if isinstance(values, dict):
        return [Value(lever, name, setting) for name, setting in values.items()]
    return [Value(lever, value_name(setting), setting) for setting in values]


def base_dict(recipe: Recipe) -> dict:
    """The recipe as the sweep starts from it: the real and real+classic arms always, the synthetic-only arm (CAS) left out."""
    raw = recipe.model_dump(mode="json")
    arms = raw["evaluate"]["arms"]
    raw["evaluate"]["arms"] = list(PLAIN_BASELINES) + [a for a in arms if a not in PLAIN_BASELINES and a != "synthetic"]
    return raw


def _apply(raw: dict, value: Value) -> None:
    lever, setting, evaluate = value.lever, value.setting, raw["evaluate"]
    if lever in FIELDS:
        section, field = FIELDS[lever]
        raw[section][field] = setting
    elif lever == "classic":
        evaluate["classic"] = setting.model_dump(mode="json")
    elif lever == "source":
        raw["generate"].update(setting.model_dump(mode="json", exclude_none=True))
    elif lever == "usage":
        evaluate["arms"] = [a for a in evaluate["arms"] if a not in USAGE_ARMS] + list(setting.arms)
        evaluate.update(setting.model_dump(mode="json", exclude={"arms"}, exclude_none=True))
    elif lever == "ratio":
        evaluate["ratios"] = [setting]


def candidate(base: dict, values: list[Value], baseline_only: bool = False) -> tuple[Recipe | None, str | None]:
    """The base recipe with `values` applied in order, made consistent; or (None, why) when it has no arm to score.

    Consistent: per-class generators sample without guidance (it needs a class-conditional model) and make no
    translations, images drawn from noise or translated leave the real+replace arms out (they swap real images
    for variations of themselves), and a set without soft labels of its own (noise or variations; not a translation or
    a release) leaves out the arms trained on them (set-soft, +soft of real+synthetic and pretrain).
    `baseline_only`: the arms without synthetic images alone (the classic lever tunes the baseline).
    """
    raw = copy.deepcopy(base)
    for value in values:
        _apply(raw, value)
    if raw["model"]["conditioning"] == "per_class":
        raw["generate"]["guidance_scale"] = 1.0
        if raw["generate"]["translate"]:
            return None, "translations need a class_conditional generator; the chosen one is per_class"
    arms = raw["evaluate"]["arms"]
    if not raw["generate"]["from_real"]:
        arms = [a for a in arms if a not in REPLACE_ARMS]
    if not raw["generate"]["translate"] and raw["evaluate"]["release"] is None:
        arms = [a for a in arms if arm_spec(a).soft != "set"]
    if baseline_only:
        arms = [a for a in arms if a not in USAGE_ARMS]
    elif not any(a in USAGE_ARMS for a in arms):
        return None, ("no arm left that uses synthetic images (the real+replace arms need variations: a source with from_real; "
                      "the arms on the set's own soft labels need a set that has them: translations, or a release)")
    raw["evaluate"]["arms"] = arms
    raw["name"] = generator_name(base, raw)
    where = ", ".join(f"sweep.{v.lever} {v.name!r}" for v in values) or "sweep"
    return recipe_from_dict(raw, where), None


def lever_skip_reason(lever: str, recipe: Recipe) -> str | None:
    """Why sweeping `lever` at these settings would change nothing (None: it applies)."""
    if lever in GENERATOR_LEVERS and recipe.evaluate.release is not None:
        return "changes the generator or its sampling; the synthetic set is another site's release (evaluate.release)"
    if lever == "strength" and not (recipe.generate.from_real or recipe.generate.translate):
        return "applies to variations or translations of the real images; the chosen source draws from noise"
    if lever == "balanced_batches" and recipe.model.conditioning != "class_conditional":
        return "applies to class_conditional generators; per_class models see one class each"
    if lever == "guidance_scale" and recipe.model.conditioning != "class_conditional":
        return "applies to class_conditional generators; the chosen ones are per_class"
    if lever == "ratio" and not any(a in ADD_ARMS for a in recipe.evaluate.arms):
        return "applies to the real+synthetic arms; the chosen usage has none"
    if lever == "replace_variations" and not any(a in REPLACE_ARMS for a in recipe.evaluate.arms):
        return "applies to the real+replace arms; the chosen usage has none"
    return None


def generator_name(base: dict, raw: dict) -> str:
    """The recipe name of a candidate's generators: the base name, with each fit lever whose value differs from the
    base recipe's, e.g. `blood-conditioning-per_class` (runs then `blood-conditioning-per_class-25pc-s0`)."""
    parts = [base["name"]]
    for lever in FIT_LEVERS:
        section, field = FIELDS[lever]
        if raw[section][field] != base[section][field]:
            parts.append(f"{lever}-{safe_name(value_name(raw[section][field]))}")
    return "-".join(parts)


def tie_key(mean: float) -> float:
    """A mean as choices compare it: means of the same accuracies summed in another order differ in the last bits
    (0.8689641744548285 against ...288), and such a tie must go to the first value, not to rounding noise."""
    return round(mean, 9)


def _val_means(table: pd.DataFrame, metric: str) -> pd.Series:
    """Each arm's mean val `metric`; refused when a run has none (cached before the metric existed): pandas' mean
    would skip it, and a nan would win or lose every comparison by accident."""
    column = f"val_{metric}"
    unscored = table["arm"].unique() if column not in table else table.loc[table[column].isna(), "arm"].unique()
    if len(unscored):
        raise UserError(f"val {metric}: not scored for {', '.join(unscored)} (runs cached before the metric existed); "
                        "evaluate them again with --force")
    return table.groupby("arm", sort=False)[column].mean()


def score(rows: list[dict], metric: str, lever: str) -> dict:
    """A lever value's score: its best arm (real+classic for `classic`) and that arm's mean val metric, with a 95 % t
    interval over the independent subsets (seeds averaged within each)."""
    table = rows_table(rows)
    val = _val_means(table, metric)
    kinds = table.groupby("arm", sort=False)["kind"].first()
    arms = ["real+classic"] if lever == "classic" else [a for a in val.index if kinds[a] in USAGE_ARMS]
    arm = max(arms, key=lambda a: tie_key(val[a]))  # ties: the first arm
    mine = table[table["arm"] == arm]
    r = t_interval(unit_values(mine, f"val_{metric}").to_numpy())
    return {"arm": arm, "val": float(val[arm]), "val_lo": r["lo"], "val_hi": r["hi"], "units": r["units"], "pairs": len(mine)}


def choose(entries: list[dict]) -> dict | None:
    """The scored entry with the highest val (ties: the first in the sweep's order); None when none was scored."""
    scored = [e for e in entries if "val" in e]
    return max(scored, key=lambda e: tie_key(e["val"])) if scored else None


def recommend(rows: list[dict], metric: str) -> dict:
    """The best arm with synthetic images against the best without, both chosen on val, and the val gain with its
    interval. Val only: this gain is measured on the data that made every choice, so it is optimistic and decides
    nothing; `confirm` scores the two arms on test, on subsets that no choice saw."""
    table = rows_table(rows)
    val = _val_means(table, metric)
    kinds = table.groupby("arm", sort=False)["kind"].first()
    synthetic = max((a for a in val.index if kinds[a] in USAGE_ARMS), key=lambda a: tie_key(val[a]))  # ties: the first arm
    baseline = max((a for a in val.index if kinds[a] not in USAGE_ARMS), key=lambda a: tie_key(val[a]))
    gain = paired_gain(table[table["arm"] == synthetic], table[table["arm"] == baseline], f"val_{metric}")
    return {"metric": metric, "synthetic_arm": synthetic, "baseline_arm": baseline,
            "val_synthetic": float(val[synthetic]), "val_baseline": float(val[baseline]), "val_gain": gain}


# The verdict of a confirmation over several regimes is its weakest regime's: "helps" needs every regime to say higher.
VERDICT_ORDER = ("lower", "no difference shown", "not scored", "too few units", "higher")


def confirm(results: dict, synthetic: str, baseline: str) -> dict:
    """The one test comparison, read from the evaluate `results` of the confirmation subsets (no choice saw them):
    `synthetic` against `baseline`, both chosen before on val, with their intervals over the subsets, regime by regime
    (each regime's gain beside its own scores, in "regimes"). A regime helps only when the interval of the headline
    metric (balanced ACC when select_on is bacc, else ACC) lies above 0 over at least MIN_UNITS subsets; the
    confirmation helps when every regime does, and its top-level fields are those of the weakest regime."""
    summary = {(s["regime"], s["arm"]): s for s in results["summary"]}
    metric = verdict_accuracy(results.get("config", {}).get("select_on", "acc"))
    metrics = dict.fromkeys([metric, "acc", "auc", "rare_recall"])  # rare-class recall where the subsets have rare classes
    checks = []
    for entry in (g for g in results["gains"] if g["arm"] == synthetic and g["vs"] == baseline):
        mine, theirs = summary[entry["regime"], synthetic], summary[entry["regime"], baseline]
        gains = {f"gain_{m}": {"mean": entry[f"d{m}"], "lo": entry[f"d{m}_lo"], "hi": entry[f"d{m}_hi"],
                               "units": entry["units"] - entry.get(f"d{m}_unscored", 0), "pairs": entry["pairs"],
                               "verdict": entry[f"d{m}_verdict"], "test_noise": entry.get(f"d{m}_test_noise", False)}
                 for m in metrics if f"d{m}" in entry}
        checks.append({"regime": entry["regime"], "score": mine.get(f"{metric}_mean", math.nan),
                       "score_baseline": theirs.get(f"{metric}_mean", math.nan), "acc": mine["acc_mean"], "acc_baseline": theirs["acc_mean"],
                       **gains, "verdict": entry[f"d{metric}_verdict"], "helps": entry[f"d{metric}_verdict"] == "higher"})
    if not checks:
        raise UserError(f"the confirmation's results compare no `{synthetic}` with `{baseline}`")
    weakest = min(checks, key=lambda c: VERDICT_ORDER.index(c["verdict"]))  # ties: the first regime
    return {"synthetic_arm": synthetic, "baseline_arm": baseline, "metric": metric, **weakest,
            "helps": all(c["helps"] for c in checks), "regimes": checks}
