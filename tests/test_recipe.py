"""Recipes: the shipped ones validate, defaults, one-line errors that name the field, --set overrides, old keys."""

from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe_dict

from synthaug.cli import main
from synthaug.core.errors import UserError
from synthaug.recipe.recipe import load_recipe, parse_overrides, recipe_from_dict

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))
BASE = {"name": "x", "data": {"medmnist": "pneumoniamnist"}, "train": {"steps": 10}}


def with_change(path: str, value):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return raw


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.train.steps > 0
    assert recipe.model.sample_size == recipe.data.size


def test_defaults_and_derived_fields():
    recipe = recipe_from_dict(BASE)
    assert recipe.model.sample_size == 28
    e = recipe.evaluate
    assert (e.select_on, e.top_up, e.rare_below, e.replace_p_by_class, e.logit_tau, e.effective_beta) == ("auc", "balance", 60, None, 1.0, 0.999)
    long_tail = recipe_from_dict(with_change("evaluate", {"select_on": "bacc", "top_up": 600, "rare_below": "median",
                                                          "replace_p_by_class": {"basophil": 4, 3: 2},
                                                          "arms": ["real+balanced+classic", "real+topup+logit_adjusted+classic"]})).evaluate
    assert (long_tail.top_up, long_tail.rare_below, long_tail.replace_p_by_class) == (600, "median", {"basophil": 4.0, 3: 2.0})
    assert recipe.model.attention_levels == [False, True, False]
    assert recipe.run_dir == Path("runs/x")


BAD = [
    (with_change("train.stepz", 3), "train.stepz: unknown key"),
    (with_change("train.steps", -5), "train.steps: Input should be greater than 0"),
    (with_change("train.steps", "many"), "train.steps: Input should be a valid integer"),
    (with_change("train.lr", 0), "train.lr: Input should be greater than 0"),
    (with_change("train.mixed_precision", "fp8"), "train.mixed_precision: Input should be 'no', 'fp16' or 'bf16'"),
    (with_change("data.size", 30), "data.size: must be one of (28, 64, 128, 224)"),
    (with_change("data.medmnist", "mnist"), "data.medmnist: unknown MedMNIST 2D flag 'mnist'"),
    (with_change("data.medmnist", "chestmnist"), "data.medmnist: chestmnist is multi-label"),
    (with_change("data.subset", {"fraction": 1.5}), "data.subset.fraction: Input should be less than or equal to 1"),
    (with_change("data.subset", {"fraction": 0}), "data.subset.fraction: Input should be greater than 0"),
    (with_change("data.subset", {"seed": 1}), "data.subset.fraction: give exactly one of 'fraction', 'per_class', 'long_tail' or 'counts'"),
    (with_change("data.folder", "/tmp"), "data.medmnist: give exactly one of 'medmnist'"),
    (with_change("model.block_out_channels", [32, 64, 64, 64]), "model.block_out_channels: 4 levels halve the image 3 times, so data.size must be divisible by 8"),
    (with_change("model.block_out_channels", [32, 48]), "model.block_out_channels: entry 48 must be a positive multiple of norm_num_groups (32)"),
    (with_change("model.attention_levels", [True]), "model.attention_levels: has 1 entries, expected one per block_out_channels entry (3)"),
    (with_change("model.conditioning", "joint"), "model.conditioning: Input should be 'per_class' or 'class_conditional'"),
    (with_change("model.sample_size", 64), "model.sample_size (64) must equal data.size (28)"),
    (with_change("diffusion.prediction_type", "sample"), "diffusion.prediction_type: Input should be 'epsilon' or 'v_prediction'"),
    (with_change("name", "../escape"), "name: String should match pattern"),
    ({"name": "x", "data": {"medmnist": "pneumoniamnist"}}, "train: required field is missing"),
    (with_change("evaluate.select_on", "f1"), "evaluate.select_on: Input should be 'auc', 'acc' or 'bacc'"),
    (with_change("evaluate.arms", ["real+classic+balanced"]), "evaluate.arms.0: Input should be 'real', 'real+classic'"),
    (with_change("evaluate.top_up", "most"), "evaluate.top_up: expected 'balance' (every class up to the largest class's real count) "
                                             "or a whole number >= 1, got 'most'"),
    (with_change("evaluate.top_up", 0), "evaluate.top_up: expected 'balance'"),
    (with_change("evaluate.rare_below", "mean"), "evaluate.rare_below: expected a whole number >= 1 (a real training count) or 'median', got 'mean'"),
    (with_change("evaluate.rare_below", 2.5), "evaluate.rare_below: expected a whole number >= 1"),
    (with_change("evaluate.replace_p_by_class", "inverted"), "evaluate.replace_p_by_class: expected 'inverse' (p x largest class count / "
                                                             "class count) or {class: factor > 0, ...}, got 'inverted'"),
    (with_change("evaluate.replace_p_by_class", {"tail": 0}), "evaluate.replace_p_by_class: expected 'inverse'"),
    (with_change("evaluate.logit_tau", 0), "evaluate.logit_tau: Input should be greater than 0"),
    (with_change("evaluate.effective_beta", 1), "evaluate.effective_beta: Input should be less than 1"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_recipes_name_the_field(raw, message):
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw, "r.yaml")
    text = str(err.value)
    assert text.startswith("r.yaml: ") and message in text
    assert "\n" not in text


def test_overrides_parse_yaml_values_and_reach_nested_fields(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    recipe = load_recipe(path, ["train.steps=200", "model.block_out_channels=[32,64]", "data.subset.per_class=5", "name=other"])
    assert recipe.train.steps == 200
    assert recipe.model.block_out_channels == [32, 64]
    assert recipe.data.subset.per_class == 5
    assert recipe.name == "other"
    with pytest.raises(UserError, match="train.bogus: unknown key"):
        load_recipe(path, ["train.bogus=1"])
    with pytest.raises(UserError, match="expected FIELD.PATH=VALUE"):
        parse_overrides(["train.steps"])


def test_file_problems_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML at line"):
        load_recipe(bad)


def test_env_var_supplies_the_data_root(monkeypatch):
    monkeypatch.setenv("SYNTHAUG_DATA_ROOT", "/data/medmnist")
    assert recipe_from_dict(BASE).data.root == Path("/data/medmnist")
    assert recipe_from_dict(with_change("data.root", "/mine")).data.root == Path("/mine")


def test_cli_bad_recipe_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(with_change("train.steps", 0)))
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"synthaug fit: error: {path}: train.steps: Input should be greater than 0 (got 0)"
    assert not (tmp_path / "runs").exists()


def test_legacy_hflip_recipes_read_as_augment(tmp_path, breast_root):
    data = {"medmnist": "breastmnist", "root": str(breast_root)}
    old = recipe_from_dict(tiny_recipe_dict(data, tmp_path, train={"hflip": False}))
    assert old.train.augment == []
    assert recipe_from_dict(tiny_recipe_dict(data, tmp_path, train={"hflip": True})).train.augment == ["hflip"]
    with pytest.raises(UserError, match="train.hflip"):
        recipe_from_dict(tiny_recipe_dict(data, tmp_path, train={"hflip": True, "augment": ["rot90"]}))
    with pytest.raises(UserError, match="train.augment"):
        recipe_from_dict(tiny_recipe_dict(data, tmp_path, train={"augment": ["spin"]}))


def test_malformed_yaml_in_set_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"--set 'model.block_out_channels=\[8, 16': the value is not valid YAML"):
        parse_overrides(["model.block_out_channels=[8, 16"])


def test_a_run_recipe_with_the_removed_bootstrap_field_still_opens_with_a_warning(tmp_path, breast_root):
    """Runs made before the intervals changed store evaluate.bootstrap: they open, and the field is said to be unused."""
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root)}, tmp_path, evaluate={"bootstrap": 10000})
    with pytest.warns(UserWarning, match="evaluate.bootstrap is no longer used"):
        recipe = recipe_from_dict(raw)
    assert "bootstrap" not in recipe.evaluate.model_dump()


def test_a_mapping_given_with_set_replaces_the_old_one(tmp_path):
    """`--set 'data.subset={counts: ...}'` on a recipe with data.subset.per_class: the counts alone, no complaint about
    a per_class the user never set on the command line; dotted paths still reach into a mapping."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(with_change("data.subset", {"per_class": 5, "seed": 3})))
    recipe = load_recipe(path, ["data.subset={counts: {0: 4, 1: 6}}"])
    assert recipe.data.subset.counts == {0: 4, 1: 6} and recipe.data.subset.per_class is None
    assert recipe.data.subset.seed == 0  # the old mapping's seed went with it
    assert load_recipe(path, ["data.subset.seed=7"]).data.subset.per_class == 5  # a dotted path keeps the rest
    nested = load_recipe(path, ["data.subset={per_class: 2}", "data.subset.seed=9"]).data.subset
    assert (nested.per_class, nested.seed) == (2, 9)


@pytest.mark.parametrize("path,hint", [("train.stepz", "train.stepz: unknown key (did you mean 'steps'?)"),
                                       ("data.subset.per_clas", "data.subset.per_clas: unknown key (did you mean 'per_class'?)"),
                                       ("evaluate.select_onn", "did you mean 'select_on'?"),
                                       ("trian", "trian: unknown key (did you mean 'train'?)")])
def test_unknown_keys_get_a_did_you_mean_hint(path, hint):
    raw = with_change("data.subset", {"per_class": 5}) if path.startswith("data.subset") else BASE
    raw = yaml.safe_load(yaml.safe_dump(raw))
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = 1
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw, "r.yaml")
    assert hint in str(err.value)


def test_unknown_keys_far_from_any_field_get_no_hint():
    with pytest.raises(UserError) as err:
        recipe_from_dict(with_change("train.zzzzzz", 1), "r.yaml")
    assert str(err.value) == "r.yaml: train.zzzzzz: unknown key"


def test_the_gpu_scale_pathmnist_recipe_follows_the_advice_for_tiles_and_says_what_it_needs():
    path = Path(__file__).resolve().parents[1] / "recipes" / "pathmnist.yaml"
    recipe = load_recipe(path)
    assert recipe.train.augment == ["hflip", "rot90"]  # tiles have no orientation (docs/fit.md)
    classic = recipe.evaluate.classic
    assert classic.hflip and classic.vflip and classic.rot90  # the classical baseline gets the same symmetries
    comments = " ".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert "pathmnist_64.npz" in comments and "downloads" in comments and "GPU" in comments and "main example" not in comments
