"""`synthaug experiment`: fit -> generate -> evaluate over every regime of one recipe."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import TINY_EVAL, tiny_recipe_dict

from synthaug.core.errors import UserError
from synthaug.study.experiment import experiment
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
