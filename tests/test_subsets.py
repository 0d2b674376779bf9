"""synthaug.data.subsets: long-tailed and explicit-count subsets, reproducible and nested, with one-line errors;
and the generator's class-balanced batches (train.balanced_batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_recipe_dict, write_medmnist_npz
from synthaug.cli import main
from synthaug.data.subsets import subset_counts, subset_indices
from synthaug.diffusion.jobs import Job
from synthaug.diffusion.objective import training_batch
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.recipe.sections import SubsetConfig

NAMES = [f"class{c}" for c in range(5)]


def labels_of(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_a_long_tail_follows_the_exponential_profile_in_the_classes_natural_order():
    labels = labels_of([100, 700, 300, 30, 40])  # natural order: 1, 2, 0, 4, 3
    counts = subset_counts(labels, SubsetConfig(long_tail={"ratio": 60, "head": 600}), list(range(5)), NAMES)
    assert counts == {1: 600, 2: 216, 0: 77, 4: 28, 3: 10}  # 600 x 60^(-k/4), rounded
    # BloodMNIST's profile of the study: 600, 334, 186, 104, 58, 32, 18, 10 over 8 classes
    eight = subset_counts(labels_of([900 - 50 * c for c in range(8)]), SubsetConfig(long_tail={"ratio": 60, "head": 600}), list(range(8)))
    assert list(eight.values()) == [600, 334, 186, 104, 58, 32, 18, 10]


def test_subsets_are_reproducible_and_nested_across_kinds():
    labels = labels_of([80, 80, 80, 80, 80])
    tail = SubsetConfig(long_tail={"ratio": 8, "head": 40}, seed=3)
    a, b = subset_indices(labels, tail, list(range(5)), NAMES), subset_indices(labels, tail, list(range(5)), NAMES)
    assert np.array_equal(a, b)
    per_class = set(subset_indices(labels, SubsetConfig(per_class=40, seed=3), list(range(5)), NAMES))
    assert set(a) <= per_class  # every class a prefix of the same permutation
    other_seed = subset_indices(labels, SubsetConfig(long_tail={"ratio": 8, "head": 40}, seed=4), list(range(5)), NAMES)
    assert not np.array_equal(a, other_seed)
    counts = subset_indices(labels, SubsetConfig(counts={"class1": 7, 3: 2}, seed=3), list(range(5)), NAMES)  # name or index
    assert np.bincount(labels[counts], minlength=5).tolist() == [0, 7, 0, 2, 0]  # classes not named: none


@pytest.mark.parametrize("subset, message", [
    ({"long_tail": {"ratio": 1, "head": 10}}, "data.subset.long_tail.ratio: Input should be greater than 1"),
    ({"long_tail": {"ratio": 5, "head": 10}, "per_class": 3}, "data.subset.fraction: give exactly one of"),
    ({"counts": {"nosuch": 3}}, "data.subset.counts: no class 'nosuch'; expected one of 0 (malignant), 1 (normal, benign)"),
    ({"counts": {"malignant": 999}}, "data.subset.counts: 999 exceeds the 12 training images of class 0 (malignant)"),
    ({"long_tail": {"ratio": 4, "head": 13}}, "data.subset.long_tail.head: 13 exceeds the 12 training images of class 0 (malignant)"),
])
def test_bad_subsets_are_one_line_errors_with_exit_code_2(tmp_path, capsys, subset, message):
    root = tmp_path / "data"
    write_medmnist_npz(root, "breastmnist", classes=2, channels=1)
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(root), "subset": subset}, tmp_path / "runs")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs" / "tiny" / "models").exists()


def test_a_long_tail_regime_is_named_and_recorded(tmp_path, breast_root):
    from synthaug.diffusion.jobs import prepare_run
    from synthaug.study.experiment import regime_recipe

    data = {"medmnist": "breastmnist", "root": str(breast_root), "subset": {"long_tail": {"ratio": 4, "head": 12}, "seed": 1}}
    recipe = recipe_from_dict(tiny_recipe_dict(data, tmp_path / "runs"))
    sub = regime_recipe(recipe, recipe.data.subset)
    assert sub.name == "tiny-lt4h12-s1" and recipe.data.subset.label() == "long tail rho 4, head 12"
    run, *_ = prepare_run(sub, is_main=True)
    info = run.read_classes()
    assert info.counts == {0: 12, 1: 3} and info.subset["long_tail"] == {"ratio": 4.0, "head": 12}


def test_balanced_batches_draw_every_class_about_equally(tiny_recipe):
    labels = torch.tensor([0] * 95 + [1] * 5)
    job = Job("all", -1, torch.zeros(100, 1, 4, 4), labels, steps=1)
    seen = {}
    for balanced in (False, True):
        recipe = tiny_recipe(train={"batch_size": 400, "balanced_batches": balanced}, model={"conditioning": "class_conditional", "cfg_dropout": 0.0})
        _, _, _, drawn = training_batch(recipe, job, 2, torch.Generator().manual_seed(0), "cpu")
        seen[balanced] = float((drawn == 1).float().mean())
    assert seen[False] < 0.12 and 0.4 < seen[True] < 0.6


def test_two_sites_share_out_the_split_and_b_subsets_are_disjoint_blocks_of_the_reserve():
    from synthaug.recipe.sections import SiteConfig

    labels = labels_of([80, 60, 40, 80, 80])
    classes = list(range(5))
    a = subset_indices(labels, None, classes, NAMES, SiteConfig(side="A", reserve=0.5, seed=1))
    reserve = subset_indices(labels, None, classes, NAMES, SiteConfig(side="B", reserve=0.5, seed=1))
    assert not set(a) & set(reserve) and len(a) + len(reserve) == len(labels)
    b = [set(subset_indices(labels, SubsetConfig(per_class=5, seed=k), classes, NAMES, SiteConfig(side="B", reserve=0.5, seed=1)))
         for k in range(4)]
    assert all(len(s) == 25 and s <= set(reserve) for s in b)
    assert all(not b[i] & b[j] for i in range(4) for j in range(i + 1, 4))  # independent units: no image shared
    # a subset of A stays inside A; another site seed shares the split out differently
    inside = subset_indices(labels, SubsetConfig(per_class=10, seed=0), classes, NAMES, SiteConfig(side="A", reserve=0.5, seed=1))
    assert set(inside) <= set(a)
    assert set(subset_indices(labels, None, classes, NAMES, SiteConfig(side="A", reserve=0.5, seed=2))) != set(a)


def test_a_b_block_past_the_reserve_is_one_line_naming_the_seed():
    from synthaug.core.errors import UserError
    from synthaug.recipe.sections import SiteConfig

    labels = labels_of([40, 40])
    with pytest.raises(UserError, match=r"^data.subset.seed: block 4 of 5 images of class 0 .* reserve holds 20"):
        subset_indices(labels, SubsetConfig(per_class=5, seed=4), [0, 1], NAMES, SiteConfig(side="B", reserve=0.5))
