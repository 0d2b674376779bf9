"""`synthaug generate --translate`: head-to-tail translations (Diff-Mix) of a class_conditional run, their sources, soft
labels, determinism, resume, the strength extremes and the refusals.

The run is a class_conditional UNet, untrained (generation only needs finished model folders), over 28 px grayscale class
folders with a long-tailed subset: 12 real training images of class 0 (common), 3 of class 1 (rare).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import files, generate_error, interrupted_generate, make_run, tiny_recipe_dict, untrained_run, write_class_folders

import synthaug.generation.plan as plan_module
from synthaug import SynthDataset
from synthaug.core.errors import UserError
from synthaug.data.arms import AddSynthetic, TopUp
from synthaug.data.images import load_split
from synthaug.data.synthetic import read_synthetic
from synthaug.generation.generate import generate
from synthaug.generation.plan import Translations, translation_pools
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.reference.metrics import paired_correlation
from synthaug.storage.rundir import open_run

COUNTS = {0: 12, 1: 3}


@pytest.fixture
def run(tmp_path):
    data = write_class_folders(tmp_path / "images", ["common", "rare"], n=12, size=28, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": 28, "subset": {"counts": COUNTS}}, tmp_path / "runs", "h2t",
                           model={"conditioning": "class_conditional"}, generate={"steps": 10})
    return make_run(recipe_from_dict(raw), models=True)


def real_train(run):
    """The real train split's images and labels, as generate reads them."""
    split = load_split(open_run(run.root).recipe.data, "train")
    return split.images, split.labels


def test_translations_start_from_larger_classes_and_are_labelled_s_to_the_gamma(run, tmp_path):
    out = generate(run.root, balance=True, translate=True, strength=[0.3, 0.9], gamma=0.5, out=tmp_path / "h2t", show_progress=False)
    table = pd.read_csv(out / "metadata.csv")
    info = run.read_classes()
    _, labels = real_train(run)
    assert table["label"].tolist() == [1] * 9  # --balance: the rare class only, up to the largest
    assert (table["source_class"] == 0).all() and (labels[table["source_index"]] == 0).all()
    assert set(table["source_index"]) <= set(info.train_indices) and table["source_index"].is_unique  # 9 of the 12, none twice
    assert table["strength"].between(0.3, 0.9).all() and table["strength"].nunique() == 9
    assert np.allclose(table["soft_1"], table["strength"] ** 0.5) and np.allclose(table["soft_0"], 1 - table["strength"] ** 0.5)
    provenance = json.loads((out / "manifest.json").read_text())["provenance"]
    assert (provenance["mode"], provenance["translate_from"], provenance["gamma"]) == ("translate", "larger", 0.5)
    assert "--balance --seed 0 --sampler dpm-solver++ --steps 10 --translate --strength 0.3,0.9 --translate-from larger --gamma 0.5" in (
        out / "README.md").read_text()  # the card's command

    # the soft labels flow through the readers into the arms that train on them; real images stay one-hot
    expected = table[["soft_0", "soft_1"]].to_numpy(np.float32)
    assert np.allclose(SynthDataset(out).soft_labels, expected)
    synthetic = read_synthetic(out, open_run(run.root), show_progress=False)
    assert np.allclose(synthetic.soft_labels, expected)
    real = (np.zeros((15, 28, 28, 1), np.uint8), np.array([0] * 12 + [1] * 3))
    topup = TopUp(real, synthetic, soft_labels=True)
    assert np.allclose(topup.soft_targets[15:], expected) and np.allclose(topup.soft_targets[:15], np.eye(2)[real[1]])
    assert TopUp(real, SynthDataset(out)).labels[15:].tolist() == [1] * 9  # the hard-label top-up: the class it was denoised as
    with pytest.raises(UserError, match="has 0 image"):  # a top-up set has none of the largest class for a ratio arm
        AddSynthetic(real, synthetic, 1, soft_labels=True)


def test_translate_from_other_translates_every_class_from_the_others(run, tmp_path):
    out = generate(run.root, per_class=3, translate=True, translate_from="other", strength=[0.6], out=tmp_path / "o", show_progress=False)
    table = pd.read_csv(out / "metadata.csv")
    assert (table["source_class"] == 1 - table["label"]).all()
    own = np.where(table["label"] == 0, table["soft_0"], table["soft_1"])
    assert np.allclose(own, 0.6**0.8) and np.allclose(table["soft_0"] + table["soft_1"], 1)  # gamma's default: Diff-Mix's 0.8
    assert AddSynthetic((np.zeros((2, 28, 28, 1), np.uint8), np.array([0, 1])), SynthDataset(out), 1, soft_labels=True).n_synthetic == 2


def test_sources_are_visited_once_each_before_any_twice_in_proportion_to_their_counts():
    assert translation_pools({0: 10, 1: 5, 2: 1}, [0, 1, 2], "larger") == {0: (), 1: (0,), 2: (0, 1)}
    assert translation_pools({0: 10, 1: 5, 2: 1}, [1], "other") == {1: (0, 2)}
    images = {0: np.zeros((6, 2, 2, 1), np.uint8), 1: np.zeros((2, 2, 2, 1), np.uint8), 2: np.zeros((1, 2, 2, 1), np.uint8)}
    indices = {0: np.arange(6), 1: np.arange(10, 12), 2: np.array([20])}
    translations = Translations(images, indices, (0.5, 0.5), 0, {2: (0, 1)}, "larger")
    first, second = ([translations.source(2, i) for i in range(k * 8, k * 8 + 8)] for k in (0, 1))
    assert sorted(first) == sorted(second) == [(0, j) for j in range(6)] + [(1, 0), (1, 1)]
    assert first != second  # each cycle in its own seeded order
    other_seed = Translations(images, indices, (0.5, 0.5), 1, {2: (0, 1)}, "larger")
    assert [other_seed.source(2, i) for i in range(8)] != first
    assert [translations.record(2, i)["source_index"] for i in range(8)] == [int(indices[c][j]) for c, j in first]


def test_same_images_whatever_batch_size_growth_or_interruption(run, tmp_path, monkeypatch):
    flags = {"translate": True, "strength": [0.2, 0.8], "classes": [1], "show_progress": False}
    reference = generate(run.root, per_class=20, out=tmp_path / "a", batch_size=1, **flags)  # two blocks of 16
    generate(run.root, per_class=6, out=tmp_path / "b", batch_size=64, **flags)
    interrupted_generate(monkeypatch, run.root, per_class=20, out=tmp_path / "b", **flags)
    generate(run.root, per_class=20, out=tmp_path / "b", **flags)
    assert files(tmp_path / "b", manifest=False) == files(reference, manifest=False)
    # another seed: other sources and other images
    other = generate(run.root, per_class=20, out=tmp_path / "c", seed=1, **flags)
    assert pd.read_csv(other / "metadata.csv")["source_index"].tolist() != pd.read_csv(reference / "metadata.csv")["source_index"].tolist()


def test_low_strength_stays_close_to_the_source_and_strength_1_ignores_it(run, tmp_path, monkeypatch):
    real, _ = real_train(run)

    def closeness(out) -> float:
        data = SynthDataset(out)
        return float(np.median(paired_correlation(data.to_numpy()[0], real[data.source_index])))

    flags = {"balance": True, "translate": True, "show_progress": False}
    low = generate(run.root, strength=[0.05], out=tmp_path / "low", **flags)
    full = generate(run.root, strength=[1.0], out=tmp_path / "full", **flags)
    assert closeness(low) > 0.9 and closeness(low) > closeness(full) + 0.2, (closeness(low), closeness(full))
    assert np.allclose(pd.read_csv(full / "metadata.csv")["soft_1"], 1.0)
    # strength 1 draws from noise: other source pixels give the very same images; at 0.5 they do not
    monkeypatch.setattr(plan_module.RealStarts, "init", lambda self, c, indices, device: -torch.ones(len(indices), 1, 28, 28))
    assert files(generate(run.root, strength=[1.0], out=tmp_path / "full-other", **flags), manifest=False) == files(full, manifest=False)
    half = generate(run.root, strength=[0.5], out=tmp_path / "half-other", **flags)
    monkeypatch.undo()
    assert files(generate(run.root, strength=[0.5], out=tmp_path / "half", **flags), manifest=False) != files(half, manifest=False)


def test_refusals_are_one_line_naming_the_flag(run, tmp_path, capsys):
    per_class = untrained_run(tmp_path / "pc")
    assert "--translate: needs a class_conditional run" in generate_error(capsys, ["--run", str(per_class.root), "--per-class", "2", "--translate"])
    base = ["--run", str(run.root), "--out", str(tmp_path / "x")]
    cases = [
        (["--balance", "--translate", "--strength", "1.5"], "--strength: one number or LO,HI with 0 < LO <= HI <= 1 with translate"),
        (["--balance", "--translate", "--strength", "0"], "--strength: one number or LO,HI with 0 < LO <= HI <= 1 with translate"),
        (["--balance", "--from-real", "--strength", "1"], "--strength: one number or LO,HI with 0 < LO <= HI < 1"),
        (["--per-class", "2", "--translate"], "--translate: no class has more real training images than class 0 (common, 12)"),
        (["--balance", "--translate", "--from-real"], "--translate: not with from_real"),
        (["--balance", "--translate", "--reject-copies"], "--reject-copies: not with translate"),
        (["--balance", "--gamma", "0.5"], "--gamma: a setting of translations; add --translate"),
        (["--balance", "--translate-from", "other"], "--translate-from: a setting of translations; add --translate"),
        (["--balance", "--translate", "--gamma", "0"], "--gamma: Input should be greater than 0"),
        (["--balance", "--translate", "--translate-from", "smaller"], "--translate-from: Input should be 'larger' or 'other'"),
    ]
    for argv, message in cases:
        assert message in generate_error(capsys, base + argv), argv
    assert not (tmp_path / "x" / "metadata.csv").exists()
