"""The sweep's levers: what a value sets in a recipe, when a lever has no effect, and the choices and the answer on val."""

from __future__ import annotations

import pytest

from synthaug.recipe.sections import SweepConfig
from synthaug.core.errors import UserError
from synthaug.study.experiment import synthetic_amount
from synthaug.study.levers import (Value, base_dict, candidate, choose, confirm, generator_name, lever_skip_reason, lever_values,
                                    recommend, score)

SWEEP = {"order": ["conditioning", "augment", "classic", "source", "strength", "guidance_scale", "usage", "ratio"],
         "conditioning": ["class_conditional", "per_class"], "augment": [["hflip", "rot90"], []],
         "classic": {"dihedral": {"hflip": True, "vflip": True, "rot90": True}},
         "source": {"noise-g4": {"from_real": False, "guidance_scale": 4}, "var-0.35": {"from_real": True, "strength": [0.35]}},
         "strength": [0.35, [0.2, 0.5]], "guidance_scale": [1.0, 4.0],
         "usage": {"add": {"arms": ["real+synthetic+classic"]}, "replace-p0.25": {"arms": ["real+replace+classic"], "replace_p": [0.25]}},
         "ratio": [1, 5], "replace_variations": [5, 10]}


def values(lever: str) -> dict[str, Value]:
    return {v.name: v for v in lever_values(SweepConfig.model_validate(SWEEP), lever)}


@pytest.fixture
def base(tiny_recipe):
    recipe = tiny_recipe("blood", model={"conditioning": "class_conditional"}, generate={"from_real": True},
                         evaluate={"arms": ["real", "synthetic", "real+synthetic+classic", "real+replace+classic"]})
    return base_dict(recipe)


def test_values_are_named_for_tables_and_folders():
    assert list(values("strength")) == ["0.35", "0.2+0.5"]
    assert values("strength")["0.2+0.5"].setting == [0.2, 0.5]
    assert list(values("augment")) == ["hflip+rot90", "none"]
    assert list(values("source")) == ["noise-g4", "var-0.35"]
    modes = lever_values(SweepConfig.model_validate({"order": ["source"], "source": ["noise", "variations"]}), "source")
    assert [(v.name, v.setting.from_real) for v in modes] == [("noise", False), ("variations", True)]
    assert [v.name for v in lever_values(SweepConfig.model_validate({"order": ["filter_confidence"], "filter_confidence": [None, 0.5]}),
                                         "filter_confidence")] == ["off", "0.5"]


def test_the_base_always_has_both_real_arms_and_no_synthetic_only_arm(base):
    assert base["evaluate"]["arms"] == ["real", "real+classic", "real+synthetic+classic", "real+replace+classic"]


def test_a_candidate_applies_values_in_order_and_is_made_consistent(base):
    recipe, why = candidate(base, [values("source")["noise-g4"], values("usage")["add"], values("ratio")["5"]])
    assert why is None
    assert (recipe.generate.from_real, recipe.generate.guidance_scale) == (False, 4.0)
    assert recipe.evaluate.arms == ["real", "real+classic", "real+synthetic+classic"] and recipe.evaluate.ratios == [5.0]
    # noise: the replace arms (variations of real images) are left out; replace alone leaves nothing to score
    recipe, _ = candidate(base, [values("source")["noise-g4"]])
    assert recipe.evaluate.arms == ["real", "real+classic", "real+synthetic+classic"]
    recipe, why = candidate(base, [values("source")["noise-g4"], values("usage")["replace-p0.25"]])
    assert recipe is None and "real+replace arms need variations" in why
    # per-class generators sample without guidance, and get their own run name
    recipe, _ = candidate(base, [values("guidance_scale")["4"], values("conditioning")["per_class"]])
    assert recipe.generate.guidance_scale == 1.0 and recipe.name == "blood-conditioning-per_class"
    recipe, _ = candidate(base, [values("augment")["none"], values("strength")["0.2+0.5"]])
    assert recipe.name == "blood-augment-none" and recipe.generate.strength == [0.2, 0.5]
    # the classic lever tunes the baseline: its candidates train no arm with synthetic images, and reuse the generators' name
    recipe, _ = candidate(base, [values("classic")["dihedral"]], baseline_only=True)
    assert recipe.evaluate.arms == ["real", "real+classic"] and recipe.evaluate.classic.rot90 and recipe.name == "blood"
    assert generator_name(base, base) == "blood"


def test_arms_on_the_sets_own_soft_labels_are_left_out_where_the_set_has_none(tiny_recipe):
    # variations and images drawn from noise carry no soft labels: a set-soft arm there would fail after hours of
    # drawing; translations carry them (s^gamma / 1 - s^gamma), so the same arm is kept
    base = base_dict(tiny_recipe("blood", model={"conditioning": "class_conditional"}, generate={"from_real": True},
                                 evaluate={"arms": ["real+balanced", "real+topup+balanced", "real+topup+set-soft+balanced"]}))
    config = SweepConfig.model_validate({"order": ["source", "usage"],
                                         "source": {"var": {"from_real": True}, "tr": {"from_real": False, "translate": True}},
                                         "usage": {"set-soft": {"arms": ["real+topup+set-soft+balanced"]}}})
    var, tr = lever_values(config, "source")
    recipe, _ = candidate(base, [var])
    assert "real+topup+set-soft+balanced" not in recipe.evaluate.arms and "real+topup+balanced" in recipe.evaluate.arms
    recipe, _ = candidate(base, [tr])
    assert recipe.evaluate.arms[-2:] == ["real+topup+balanced", "real+topup+set-soft+balanced"]
    (soft,) = lever_values(config, "usage")
    recipe, why = candidate(base, [var, soft])
    assert recipe is None and "soft labels need a set that has them" in why
    assert candidate(base, [tr, soft])[0].evaluate.arms[-1] == "real+topup+set-soft+balanced"


def test_a_value_that_makes_a_bad_recipe_names_the_lever(base):
    bad = Value("usage", "p2", SweepConfig.model_validate({"order": ["usage"], "usage": {"p2": {"arms": ["real+replace"], "replace_p": [2]}}}).usage["p2"])
    with pytest.raises(UserError, match=r"sweep.usage 'p2': evaluate.replace_p: probabilities in \(0, 1\]"):
        candidate(base, [bad])


def test_levers_that_would_change_nothing_are_not_swept(base):
    noise, _ = candidate(base, [values("source")["noise-g4"]])
    assert "variations" in lever_skip_reason("strength", noise)
    per_class, _ = candidate(base, [values("conditioning")["per_class"]])
    assert "class_conditional" in lever_skip_reason("guidance_scale", per_class)
    replace, _ = candidate(base, [values("usage")["replace-p0.25"]])
    assert "real+synthetic" in lever_skip_reason("ratio", replace)
    assert lever_skip_reason("strength", replace) is None and lever_skip_reason("ratio", noise) is None
    add, _ = candidate(base, [values("usage")["add"]])
    assert "real+replace" in lever_skip_reason("replace_variations", add) and lever_skip_reason("replace_variations", replace) is None


def test_a_translation_source_sets_its_mode_whole_and_needs_a_class_conditional_generator(base):
    sweep = SweepConfig.model_validate({"order": ["source"], "source": ["noise", "variations", "translations"]})
    modes = {v.name: v for v in lever_values(sweep, "source")}
    translated, why = candidate(base, [modes["translations"]])  # the base recipe varies (from_real): translating turns that off
    assert why is None and (translated.generate.translate, translated.generate.from_real) == (True, False)
    assert translated.evaluate.arms == ["real", "real+classic", "real+synthetic+classic"]  # the replace arms need variations
    assert lever_skip_reason("strength", translated) is None  # the strength lever sets a translation's strength
    back, _ = candidate(base, [modes["translations"], modes["noise"]])
    assert not back.generate.translate and "variations or translations" in lever_skip_reason("strength", back)
    h2t = SweepConfig.model_validate({"order": ["source"], "source": {"h2t-other": {"from_real": False, "translate": True,
                                                                                     "translate_from": "other", "gamma": 1.0}}}).source["h2t-other"]
    recipe, _ = candidate(base, [Value("source", "h2t-other", h2t)])
    assert (recipe.generate.translate_from, recipe.generate.gamma) == ("other", 1.0)
    recipe, why = candidate(base, [modes["translations"], values("conditioning")["per_class"]])
    assert recipe is None and "translations need a class_conditional generator" in why


def test_k_variations_per_real_image_is_what_experiment_draws_for_the_replace_arms(base):
    recipe, _ = candidate(base, [values("usage")["replace-p0.25"], values("replace_variations")["10"]])
    assert recipe.evaluate.replace_variations == 10 and synthetic_amount(recipe) == {"per_real": 10}
    recipe, _ = candidate(base, [values("replace_variations")["10"], values("ratio")["5"]])
    assert synthetic_amount(recipe) == {"per_real": 10}  # the add arms take the first 5 of each
    recipe, _ = candidate(base, [values("usage")["add"], values("ratio")["5"]])
    assert synthetic_amount(recipe) == {"ratio": 5.0}


def rows(val: dict[str, list[float]], test: dict[str, list[float]] | None = None) -> list[dict]:
    """Result rows of evaluate: one per arm and (subset, seed) pair, with the given val (and test) accuracies."""
    kinds = {"real": "real", "real+classic": "real+classic", "real+synthetic+classic 1x": "real+synthetic+classic",
             "real+replace+classic p0.5": "real+replace+classic"}
    out = []
    for arm, accs in val.items():
        for i, acc in enumerate(accs):
            t = (test or {}).get(arm, accs)[i]
            out.append({"regime": "10/class", "subset_seed": i // 2, "seed": i % 2, "arm": arm, "kind": kinds[arm],
                        "val_acc": acc, "val_auc": acc, "test_acc": t, "test_auc": t, "curve": []})
    return out


def test_a_value_is_scored_by_its_best_synthetic_arm_on_val_and_ties_go_to_the_first():
    results = rows({"real": [0.9] * 4, "real+classic": [0.95] * 4, "real+synthetic+classic 1x": [0.6, 0.7, 0.8, 0.9],
                    "real+replace+classic p0.5": [0.8] * 4})
    entry = score(results, "acc", "usage")
    assert entry["arm"] == "real+replace+classic p0.5" and entry["val"] == pytest.approx(0.8) and entry["pairs"] == 4
    assert score(results, "acc", "classic")["arm"] == "real+classic"
    assert choose([{"value": "a", "val": 0.8}, {"value": "b", "skipped": "x"}, {"value": "c", "val": 0.8}])["value"] == "a"
    assert choose([{"value": "b", "skipped": "x"}]) is None


def test_a_tie_in_val_up_to_summation_noise_goes_to_the_first_value():
    # The BloodMNIST sweep's strength 0.35 and [0.2, 0.5]: the same val accuracies, summed in another order.
    entries = [{"value": "0.35", "val": 0.8689641744548285}, {"value": "0.2+0.5", "val": 0.8689641744548288}]
    assert choose(entries)["value"] == "0.35"
    assert choose(entries + [{"value": "0.5", "val": 0.869}])["value"] == "0.5"


def test_recommend_chooses_on_val_and_reports_val_only():
    # synthetic wins on val (+0.05 on every pair); test says it loses, and test never enters the choice or the answer
    answer = recommend(rows({"real": [0.80] * 4, "real+classic": [0.85] * 4, "real+synthetic+classic 1x": [0.90] * 4},
                            test={"real": [0.8] * 4, "real+classic": [0.9] * 4, "real+synthetic+classic 1x": [0.7] * 4}), "acc")
    assert answer["baseline_arm"] == "real+classic" and answer["synthetic_arm"] == "real+synthetic+classic 1x"
    assert answer["val_gain"]["mean"] == pytest.approx(0.05) and answer["val_gain"]["pairs"] == 4 and answer["val_gain"]["units"] == 2
    assert "test" not in answer and "helps" not in answer  # helps is the confirmation's to say
    loses = recommend(rows({"real": [0.90] * 4, "real+classic": [0.85] * 4, "real+synthetic+classic 1x": [0.80] * 4,
                            "real+replace+classic p0.5": [0.88, 0.88, 0.88, 0.92]}), "acc")
    assert loses["baseline_arm"] == "real" and loses["synthetic_arm"] == "real+replace+classic p0.5"
    assert loses["val_gain"]["mean"] == pytest.approx(-0.01) and loses["val_gain"]["lo"] <= loses["val_gain"]["mean"] <= loses["val_gain"]["hi"]


@pytest.mark.parametrize("gains, verdict, helps", [
    ([0.02, 0.03, 0.025, 0.028, 0.022], "higher", True),
    ([0.02, 0.03, 0.025], "too few units", False),  # above 0, but from 3 subsets: no yes
    ([0.02, -0.03, 0.025, 0.01, -0.02], "no difference shown", False),
])
def test_confirm_says_helps_only_with_the_lower_bound_above_0_over_enough_subsets(gains, verdict, helps):
    from synthaug.evaluation.summary import summarise
    from synthaug.recipe.sections import EvaluateConfig

    confirm_rows = []
    for subset, gain in enumerate(gains):
        confirm_rows += [{"regime": "10/class", "subset_seed": subset + 10, "seed": 0, "arm": a, "kind": k, "n_real_used": 80,
                          "n_synthetic": 0, "steps": 5, "val_acc": 0.8, "val_auc": 0.9, "test_acc": 0.8 + g, "test_auc": 0.9}
                         for a, k, g in (("real+classic", "real+classic", 0.0), ("real+replace+classic p0.25", "real+replace+classic", gain))]
    results = summarise(confirm_rows, EvaluateConfig())
    answer = confirm(results, "real+replace+classic p0.25", "real+classic")
    assert answer["verdict"] == verdict and answer["helps"] is helps and answer["gain_acc"]["units"] == len(gains)


def test_confirm_judges_each_regime_on_its_own_gain_and_scores():
    """A two-size confirmation: synthetic data helps at 10 per class and not at 25; each verdict comes with its own
    regime's numbers, and the sweep's answer is "helps" only if every size says so."""
    from synthaug.evaluation.summary import summarise
    from synthaug.recipe.sections import EvaluateConfig

    confirm_rows = []
    for regime, base, gains in (("10/class", 0.70, [0.05, 0.06, 0.055, 0.058, 0.052]), ("25/class", 0.85, [0.01, -0.02, 0.015, 0.0, -0.01])):
        for subset, gain in enumerate(gains):
            confirm_rows += [{"regime": regime, "subset_seed": subset + 10, "seed": 0, "arm": a, "kind": k, "n_real_used": 80,
                              "n_synthetic": 0, "steps": 5, "val_acc": 0.8, "val_auc": 0.9, "test_acc": base + g, "test_auc": 0.9}
                             for a, k, g in (("real+classic", "real+classic", 0.0), ("real+replace+classic p0.25", "real+replace+classic", gain))]
    answer = confirm(summarise(confirm_rows, EvaluateConfig()), "real+replace+classic p0.25", "real+classic")
    assert not answer["helps"]  # before: "helps" from 10/class, printed with 25/class's scores
    by_regime = {c["regime"]: c for c in answer["regimes"]}
    assert by_regime["10/class"]["verdict"] == "higher" and by_regime["25/class"]["verdict"] == "no difference shown"
    assert by_regime["10/class"]["acc_baseline"] == pytest.approx(0.70) and by_regime["25/class"]["acc_baseline"] == pytest.approx(0.85)
    assert not answer["helps"] and answer["verdict"] == "no difference shown" and answer["regime"] == "25/class"
    assert answer["acc_baseline"] == pytest.approx(0.85) and answer["gain_acc"]["mean"] == pytest.approx(-0.001)  # one regime's numbers


def test_confirm_carries_the_rare_class_recall_gain_of_long_tailed_subsets():
    from synthaug.evaluation.summary import summarise
    from synthaug.recipe.sections import EvaluateConfig

    confirm_rows = [{"regime": "lt60", "subset_seed": subset + 5, "seed": 0, "arm": a, "kind": a, "n_real_used": 80,
                     "n_synthetic": 0, "steps": 5, "val_acc": 0.8, "val_auc": 0.9, "val_bacc": 0.7, "test_acc": 0.8, "test_auc": 0.9,
                     "test_bacc": 0.7 + g, "test_rare_recall": 0.5 + 2 * g}
                    for subset in range(5) for a, g in (("real+balanced", 0.0), ("real+topup+balanced", 0.01 * subset))]
    cfg = EvaluateConfig(select_on="bacc")
    results = {**summarise(confirm_rows, cfg), "config": cfg.model_dump(mode="json")}  # as evaluate writes it
    answer = confirm(results, "real+topup+balanced", "real+balanced")
    assert answer["metric"] == "bacc" and answer["gain_bacc"]["mean"] == pytest.approx(0.02)
    assert answer["gain_rare_recall"]["mean"] == pytest.approx(0.04) and answer["gain_rare_recall"]["units"] == 5


def test_a_choice_on_val_refuses_arms_without_a_val_score():
    """Arms cached before balanced metrics have no val balanced ACC: a nan must neither win nor lose a choice."""
    results = [{**r, "val_bacc": float("nan") if r["arm"] == "real" else r["val_acc"]}
               for r in rows({"real": [0.9] * 4, "real+classic": [0.85] * 4, "real+synthetic+classic 1x": [0.8] * 4})]
    with pytest.raises(UserError, match=r"val bacc: not scored for real \(runs cached before the metric existed\)"):
        recommend(results, "bacc")
    with pytest.raises(UserError, match="not scored for real"):
        score(results, "bacc", "usage")


def test_with_another_site_s_release_only_the_usage_levers_are_swept(tiny_recipe, tmp_path):
    recipe = tiny_recipe("b", model={"conditioning": "class_conditional"},
                         evaluate={"arms": ["real+classic", "pretrain+soft+classic", "real+synthetic+soft+classic"], "release": str(tmp_path)})
    assert "another site's release" in lever_skip_reason("guidance_scale", recipe)
    assert "another site's release" in lever_skip_reason("balanced_batches", recipe)
    assert lever_skip_reason("ratio", recipe) is None and lever_skip_reason("usage", recipe) is None
