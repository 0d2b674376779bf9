"""Classes by name, index or digit string: the recipe's data.classes, generate's --classes and SynthDataset's classes
accept the same inputs through one resolver, and refuse unknown ones with the same one-line error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, write_synthetic

from synthaug import SynthDataset
from synthaug.core.errors import UserError
from synthaug.data.images import class_names, resolve_classes
from synthaug.generation.plan import pick_classes
from synthaug.recipe.sections import DataConfig
from synthaug.storage.rundir import ClassesInfo

BLOOD = DataConfig(medmnist="bloodmnist")  # its class names come with medmnist: no data file needed
NAMES = class_names(BLOOD)  # basophil, eosinophil, ..., platelet


def trained(classes: list[int]) -> ClassesInfo:
    """A run's classes.json that trained `classes` of BloodMNIST."""
    counts = {c: 1 for c in classes}
    return ClassesInfo(class_names=NAMES, classes=classes, conditioning="per_class", models={c: f"class_{c}" for c in classes},
                       channels=1, size=8, counts=counts, split_counts=counts, subset=None, train_indices=list(range(len(classes))))


@pytest.fixture(scope="module")
def every_class_folder(tmp_path_factory) -> Path:
    """A synthetic folder with one image of each of the 8 classes."""
    folder = tmp_path_factory.mktemp("classes") / "syn"
    images, labels = make_images(1, len(NAMES), 8, 1)
    write_synthetic(folder, images, labels, NAMES, run=folder.parent / "run")
    return folder


@pytest.fixture(params=["data.classes", "--classes", "classes"])
def place(request, every_class_folder):
    """(the field a place names in its errors, its resolver: requested classes -> indices)."""
    resolvers = {
        "data.classes": lambda requested: resolve_classes(BLOOD.model_copy(update={"classes": requested})),
        "--classes": lambda requested: pick_classes(requested, trained(list(range(len(NAMES))))),
        "classes": lambda requested: sorted(set(SynthDataset(every_class_folder, classes=requested).labels.tolist())),
    }
    return request.param, resolvers[request.param]


@pytest.mark.parametrize(("requested", "indices"), [
    (["3"], [3]), ([3], [3]), ([np.int64(3)], [3]), (["basophil"], [0]), ([" 3"], [3]),
    (["platelet", "3", 3, "basophil"], [0, 3, 7]), ([], []),
])
def test_every_place_accepts_names_indices_and_digit_strings(place, requested, indices):
    _, resolve = place
    assert resolve(requested) == indices


@pytest.mark.parametrize("unknown", ["platelets", 8, "8", -1, "-1", "3.0", 3.0, True, "", "³"])
def test_every_place_refuses_an_unknown_class_in_one_line_naming_the_field_and_the_classes(place, unknown):
    field, resolve = place
    with pytest.raises(UserError) as refused:
        resolve(["basophil", unknown])
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{field}: ") and f"no class {unknown!r}" in message
    assert "0 (basophil)" in message and "7 (platelet)" in message


def test_a_run_or_a_folder_offers_only_the_classes_it_has(tmp_path):
    with pytest.raises(UserError, match=r"^--classes: the run has no class '5'; expected one of 0 \(basophil\), 3 \(immature") as refused:
        pick_classes(["5"], trained([0, 3]))
    assert "eosinophil" not in str(refused.value)
    assert pick_classes(None, trained([0, 3])) == [0, 3] and pick_classes(["3", "basophil"], trained([0, 3])) == [0, 3]
    images, labels = make_images(1, 2, 8, 1)
    write_synthetic(tmp_path / "two", images, [0, 3], NAMES, run=tmp_path / "run")
    assert SynthDataset(tmp_path / "two", classes=["3"]).labels.tolist() == [3]
    with pytest.raises(UserError, match=rf"^classes: {tmp_path / 'two'} has no class 'eosinophil'; expected one of 0 \(basophil\), 3 \("):
        SynthDataset(tmp_path / "two", classes=["eosinophil"])


def test_a_name_wins_over_an_index():
    """A folder dataset may call its classes "0", "1", ...: "1" is then the class named "1", not index 1."""
    info = replace(trained([0, 1]), class_names=["1", "0"])
    assert pick_classes(["1"], info) == [0] and pick_classes([1], info) == [1]
