"""data.unlabeled: the pool is the rest of the training split or a folder, disjoint from labelled, val and test images."""

import json

import numpy as np
import pytest
from conftest import tiny_recipe_dict
from PIL import Image

from synthaug.cli import main
from synthaug.data.images import load_split, resolve_classes
from synthaug.data.subsets import subset_indices
from synthaug.core.errors import UserError
from synthaug.data.pool import load_pool
from synthaug.recipe.recipe import recipe_from_dict

pytestmark = pytest.mark.filterwarnings("ignore:.*MD5 differs")


def pooled(tiny_recipe, **data):
    return tiny_recipe(data=data, model={"conditioning": "class_conditional"})


def pool_of(recipe):
    train = load_split(recipe.data, "train")
    classes = resolve_classes(recipe.data)
    labelled = subset_indices(train.labels, recipe.data.subset, classes, train.class_names)
    return load_pool(recipe.data, classes, labelled, train), labelled, train


def test_the_rest_of_the_split_is_disjoint_from_the_labelled_subset_and_reproducible(tiny_recipe):
    recipe = pooled(tiny_recipe, subset={"per_class": 3, "seed": 0}, unlabeled={})
    pool, labelled, train = pool_of(recipe)
    indices = np.array(pool.record["indices"])
    assert pool.record["count"] == len(train.labels) - len(labelled) == 18
    assert not np.intersect1d(indices, labelled).size
    assert np.array_equal(pool.images, train.images[indices])
    counted = pooled(tiny_recipe, subset={"per_class": 3, "seed": 0}, unlabeled={"count": 5, "seed": 4})
    first, again = pool_of(counted)[0], pool_of(counted)[0]
    assert first.record["indices"] == again.record["indices"] and first.record["count"] == 5
    other = pooled(tiny_recipe, subset={"per_class": 3, "seed": 0}, unlabeled={"count": 5, "seed": 5})
    assert pool_of(other)[0].record["indices"] != first.record["indices"]  # its own seed
    assert set(first.record["indices"]) <= set(pool.record["indices"])


def test_a_folder_pool_is_read_and_an_image_from_val_is_refused(tmp_path, tiny_recipe, breast_root):
    folder = tmp_path / "archive" / "deep"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(folder / f"x{i}.png")
    recipe = pooled(tiny_recipe, subset={"per_class": 3}, unlabeled={"folder": str(tmp_path / "archive")})
    pool, _, _ = pool_of(recipe)
    assert pool.images.shape == (3, 28, 28, 1) and pool.record["files"] == ["deep/x0.png", "deep/x1.png", "deep/x2.png"]
    val = load_split(recipe.data, "val")
    Image.fromarray(val.images[2, ..., 0]).save(folder / "leaked.png")
    with pytest.raises(UserError, match=r"data.unlabeled.folder: .*leaked.png is the val image 2"):
        pool_of(recipe)


@pytest.mark.parametrize("unlabeled, extra, message", [
    ({}, {}, "data.unlabeled: the rest of the training split is empty without data.subset"),
    ({"count": 3, "fraction": 0.5}, {"subset": {"per_class": 3}}, "data.unlabeled.count: give at most one"),
    ({"count": 99}, {"subset": {"per_class": 3}}, "data.unlabeled.count: 99 exceeds the 18 images"),
    ({"folder": "/no/such/folder"}, {}, "data.unlabeled.folder: /no/such/folder is not a directory"),
])
def test_bad_pools_are_one_line_errors(tmp_path, breast_root, capsys, unlabeled, extra, message):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root), "unlabeled": unlabeled, **extra}, tmp_path / "runs",
                           model={"conditioning": "class_conditional"})
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(raw))
    assert main(["fit", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_per_class_models_need_pretraining_to_use_the_pool(tmp_path, breast_root):
    raw = tiny_recipe_dict({"medmnist": "breastmnist", "root": str(breast_root), "subset": {"per_class": 3}, "unlabeled": {}}, tmp_path)
    with pytest.raises(UserError, match="train.pretrain_steps: per-class models learn from data.unlabeled only"):
        recipe_from_dict(raw)
