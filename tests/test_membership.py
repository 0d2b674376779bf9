"""Membership inference (synthaug.auditing.membership): the model attack finds a generator that memorized its 32
training images and sees nothing in a fair split; the set attack finds released copies of training images; audit.json
and audit.md carry both, with the members and non-members they used."""

import json

import numpy as np
import pytest
import torch
from conftest import BLOB_NAMES, blob_images, run_train_images, tiny_recipe_dict, write_class_folders, write_synthetic

from synthaug.auditing.audit import audit
from synthaug.auditing.membership import attack_figures, model_attack
from synthaug.diffusion.training import fit
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.recipe.sections import MembershipConfig
from synthaug.reference.realdata import load_run_data
from synthaug.storage.rundir import open_run

pytestmark = pytest.mark.filterwarnings("ignore:.*MD5 differs")

ATTACK = MembershipConfig(timesteps=[0.05, 0.2, 0.4], noise_draws=2, resamples=500)


@pytest.fixture(scope="module")
def overfitted(tmp_path_factory):
    """A class-conditional 8 px generator trained 200 steps on 32 images (16 per class): it memorizes them."""
    root = tmp_path_factory.mktemp("leak")
    images = write_class_folders(root / "images", ["a", "b"], n=40, size=8, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(images), "size": 8, "subset": {"per_class": 16, "seed": 0}}, root / "runs", "leak",
                           model={"conditioning": "class_conditional", "cfg_dropout": 0.0}, diffusion={"num_train_timesteps": 100},
                           train={"steps": 200, "batch_size": 32, "lr": 1e-2, "checkpoint_every": 1000, "augment": [], "snr_gamma": None})
    run = open_run(fit(recipe_from_dict(raw), show_progress=False).root)
    return run, load_run_data(run)


def test_the_model_attack_finds_an_overfitted_generators_training_images(overfitted):
    run, data = overfitted
    found = model_attack(run, data.train, data.val, ATTACK, torch.device("cpu"))
    loss = found["loss"]
    assert loss["members"] == 32 and loss["non_members"] == 80 and found["timesteps"] == [5, 20, 40]
    assert loss["auc_interval"][0] > 0.55 and loss["auc"] > loss["coin"]["auc_interval"][1]
    assert loss["coin"]["auc_interval"][0] < 0.5 < loss["coin"]["auc_interval"][1]
    assert found["calibrated"]["auc"] > 0.5 and "initialization" in found["reference"]


def test_a_fair_split_of_images_the_generator_never_saw_looks_like_a_coin(overfitted):
    run, data = overfitted
    unseen = data.val  # neither half was trained on
    fair = model_attack(run, unseen.take(np.arange(0, 80, 2)), unseen.take(np.arange(1, 80, 2)), ATTACK, torch.device("cpu"))
    for attack in ("loss", "calibrated"):
        low, high = fair[attack]["auc_interval"]
        assert low < 0.5 < high


def test_attack_figures_of_a_perfect_and_of_a_random_score():
    perfect = attack_figures(np.arange(100, 150), np.arange(100), resamples=200, seed=0)
    assert perfect["auc"] == 1 and perfect["tpr_at_1pct_fpr"] == 1 and perfect["auc_interval"] == [1, 1]
    rng = np.random.default_rng(3)
    random = attack_figures(rng.normal(size=200), rng.normal(size=300), resamples=500, seed=0)
    assert random["auc_interval"][0] < 0.5 < random["auc_interval"][1]
    assert random["coin"]["auc_interval"][0] < random["auc"] < random["coin"]["auc_interval"][1]
    assert random["coin"]["tpr_interval"][0] == 0 and random["coin"]["tpr_interval"][1] < 0.1


def test_the_set_attack_finds_released_copies_of_training_images(blob_run, tmp_path):
    train, labels = run_train_images(blob_run)
    keep = np.arange(0, len(labels), 2)  # every other training image copied into the release, beside new images
    new = np.concatenate([blob_images(15, c, seed=42) for c in (0, 1)])
    images = np.concatenate([train[keep], new])
    folder = tmp_path / "synthetic-copies"
    write_synthetic(folder, images, np.concatenate([labels[keep], np.repeat([0, 1], 15)]), BLOB_NAMES)
    report = audit(open_run(blob_run, ["audit.membership.resamples=200"]), folder, device="cpu", show_progress=False)
    mia = json.loads((folder / "audit.json").read_text())["membership"]
    assert mia == json.loads(json.dumps(report["membership"]))
    assert mia["members"] == {"n": 60, "of": 60, "source": "the run's training images (classes.json train_indices)"}
    assert mia["non_members"]["n"] == 40 and mia["non_members"]["source"] == "the real val split"
    assert mia["model"] is None  # no finished models in this run
    pixel = mia["released"]["pixel"]
    assert pixel["auc_interval"][0] > 0.65 and pixel["tpr_at_1pct_fpr"] > 0.4 > pixel["coin"]["tpr_interval"][1]
    baseline = mia["baseline"]["pixel"]  # real test images released instead: no copies
    assert baseline["auc_interval"][0] < 0.5 < baseline["auc_interval"][1]
    markdown = (folder / "audit.md").read_text()
    assert "## Membership inference" in markdown and "Members: 60 of 60" in markdown and "released set (60 images): nearest, pixels" in markdown


def test_non_members_from_the_training_split_outside_the_subset(blob_run, tmp_path):
    run = open_run(blob_run, ["audit.membership.non_members=train_rest", "audit.membership.members=20", "audit.membership.resamples=200"])
    train, labels = run_train_images(blob_run)
    folder = tmp_path / "synthetic-new"
    write_synthetic(folder, np.concatenate([blob_images(10, c, seed=43) for c in (0, 1)]), np.repeat([0, 1], 10), BLOB_NAMES)
    mia = audit(run, folder, device="cpu", show_progress=False)["membership"]
    assert mia["members"]["n"] == 20 and mia["members"]["of"] == 60
    assert mia["non_members"] == {"n": 20, "of": 20, "source": "the training split's images outside the run's subset and pool"}
