"""`synthaug experiment`: fit -> generate -> evaluate over every regime of one recipe."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import TINY_EVAL, tiny_recipe_dict

from synthaug.core.errors import UserError
from synthaug.study.experiment import experiment, regime_recipes
from synthaug.recipe.recipe import recipe_from_dict


def test_experiment_fits_generates_and_evaluates_every_regime(tmp_path, breast_root):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", "exp",
                           model={"conditioning": "class_conditional"}, train={"steps": 2},
                           generate={"steps": 2, "sampler": "ddim"},
                           evaluate={**TINY_EVAL, "seeds": [0], "ratios": [1],
                                     "regimes": [{"per_class": 4}, {"fraction": 1.0}]})
    results = experiment(recipe_from_dict(raw), tmp_path / "report", show_progress=False)
    assert [r["run"] for r in results["data"]["regimes"]] == [str(tmp_path / "runs" / "exp-4pc-s0"), str(tmp_path / "runs" / "exp-full")]
    table = pd.read_csv(tmp_path / "report" / "results.csv")
    assert set(table["regime"]) == {"4/class", "100%"} and len(table) == 2 * 5
    # Each regime's generator saw only its own subset; the synthetic set holds what the largest ratio needs.
    assert json.loads((tmp_path / "runs" / "exp-4pc-s0" / "classes.json").read_text())["counts"] == {"0": 4, "1": 4}
    assert len(pd.read_csv(tmp_path / "runs" / "exp-full" / "synthetic" / "metadata.csv")) == 2 * 12


def test_experiment_with_variations_and_replace_arms(tmp_path, breast_root):
    evaluate = {**TINY_EVAL, "seeds": [0], "ratios": [1], "arms": ["real", "real+synthetic", "real+replace"], "replace_p": [0.5]}
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root), "subset": {"per_class": 4}}, tmp_path / "runs", "var",
                           train={"steps": 2}, generate={"steps": 4, "from_real": True, "strength": [0.3]}, evaluate=evaluate)
    results = experiment(recipe_from_dict(raw), tmp_path / "report", show_progress=False)
    assert {r["arm"] for r in results["rows"]} == {"real", "real+synthetic 1x", "real+replace p0.5"}
    table = pd.read_csv(tmp_path / "runs" / "var-4pc-s0" / "synthetic" / "metadata.csv")
    assert table.groupby("source_index").size().eq(5).all() and len(table) == 8 * 5  # 5 variations of each real image
    with pytest.raises(UserError, match="evaluate.arms: the real\\+replace arms need variations"):
        experiment(recipe_from_dict({**raw, "generate": {"steps": 4}}), tmp_path / "report2", show_progress=False)


def test_a_topup_draws_what_each_class_lacks_and_is_served_by_a_set_drawn_to_more(tmp_path, breast_root):
    evaluate = {**TINY_EVAL, "seeds": [0], "arms": ["real", "real+topup"], "top_up": 6}
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root), "subset": {"counts": {"0": 4, "1": 2}}},
                           tmp_path / "runs", "lt", model={"conditioning": "class_conditional"}, train={"steps": 2},
                           generate={"steps": 2, "sampler": "ddim"}, evaluate=evaluate)
    recipe = recipe_from_dict(raw)
    first = experiment(recipe, tmp_path / "a", show_progress=False, synthetic_folder="drawn")
    run = regime_recipes(recipe)[0].run_dir
    table = pd.read_csv(run / "drawn" / "metadata.csv")
    assert table.groupby("label").size().to_dict() == {0: 2, 1: 4}  # 6 - n_c of each class, nothing more
    # A set drawn to 6 of every class holds the top-up as its first images: it serves, unchanged, with the same numbers.
    from synthaug.generation.generate import generate
    generate(run, per_class=6, out=run / "more", show_progress=False)
    manifest = json.loads((run / "more" / "manifest.json").read_text())
    assert "translate" not in manifest["recipe"]["generate"]  # recorded as before translations existed: older sets still match
    again = experiment(recipe, tmp_path / "b", show_progress=False, synthetic_folder="more")
    assert len(pd.read_csv(run / "more" / "metadata.csv")) == 12  # not rewritten to the smaller counts
    rows = {r["arm"]: r for r in first["rows"]}
    assert {r["arm"]: r["val_acc"] for r in again["rows"]} == {a: r["val_acc"] for a, r in rows.items()}


def test_arms_of_real_images_alone_train_no_generator(tmp_path, breast_root):
    """The ceiling of a long-tailed study (more real images of the rare classes) is a regime with real arms only."""
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", "ceiling",
                           evaluate={**TINY_EVAL, "seeds": [0], "arms": ["real", "real+balanced"],
                                     "regimes": [{"counts": {"0": 6, "1": 3}, "seed": 0}]})
    results = experiment(recipe_from_dict(raw), tmp_path / "report", show_progress=False)
    run = regime_recipes(recipe_from_dict(raw))[0].run_dir
    assert {r["arm"] for r in results["rows"]} == {"real", "real+balanced"}
    assert json.loads((run / "classes.json").read_text())["counts"] == {"0": 6, "1": 3}
    assert not (run / "models").exists() or not any((run / "models").iterdir())  # nothing trained


def test_resample_draws_overlapping_units_each_with_its_own_seeds(tmp_path, breast_root):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", "own",
                           evaluate={**TINY_EVAL, "seeds": [0, 1], "resample": {"units": 5, "fraction": 0.5, "seed": 3}})
    units = regime_recipes(recipe_from_dict(raw))
    assert [u.data.subset.seed for u in units] == [3, 4, 5, 6, 7] and {u.data.subset.fraction for u in units} == {0.5}
    assert len({u.train.seed for u in units}) == 5 and len({u.generate.seed for u in units}) == 5
    seeds = [s for u in units for s in u.evaluate.seeds]
    assert len(seeds) == len(set(seeds)) == 10  # no classifier seed shared by two units
    for bad, why in (({"regimes": [{"fraction": 0.5}]}, "not both"), ({"resample": {"units": 3}}, "units"),
                     ({"resample": {"fraction": 0.8}}, "fraction")):
        with pytest.raises(UserError, match=why):
            recipe_from_dict({**raw, "evaluate": {**raw["evaluate"], **bad}})


def test_a_resampled_experiment_ends_in_a_verdict_with_the_overlap_correction(tmp_path, breast_root, capsys):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path / "runs", "own",
                           evaluate={**TINY_EVAL, "seeds": [0], "arms": ["real", "real+classic"], "resample": {"units": 5}})
    results = experiment(recipe_from_dict(raw), tmp_path / "report", show_progress=False)
    printed = capsys.readouterr().out
    assert "expected run time on cpu: about" in printed and "5 unit(s)" in printed
    gain = next(g for g in results["gains"] if g["arm"] == "real+classic")
    assert gain["units"] == 5 and gain["overlap"] == 0.5 and gain["dacc_verdict"] != "too few units"
    assert len({r["seed"] for r in results["rows"]}) == 5  # one classifier seed per unit, none shared
    report = (tmp_path / "report" / "report.md").read_text()
    assert "corrected resampled t" in report and "Nadeau & Bengio" in report
