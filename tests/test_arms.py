"""synthaug.data.arms: evaluate's arms as PyTorch datasets (per class, top-up, replacement by a real image's own
variations) and their batches; a plain PyTorch loop over them reproduces an evaluate arm's numbers for the same seed."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import EVAL_NAMES, write_synthetic
from PIL import Image

from synthaug.classifier.harness import classic, classification_metrics, initial_classifier, predict
from synthaug.core.errors import UserError
from synthaug.data.arms import AddSynthetic, ArmBatches, ArmDataset, ReplaceWithVariations, SyntheticOnly, TopUp
from synthaug.data.images import load_split
from synthaug.data.synthetic import SynthDataset, mix_real_synthetic
from synthaug.evaluation.evaluate import evaluate
from synthaug.evaluation.regimes import load_regime
from synthaug.recipe.sections import EvaluateConfig
from synthaug.storage.pixels import to_model_tensor
from synthaug.storage.rundir import open_run


def tagged(counts, first: int = 0, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`counts[c]` 4 px images of class c; image k is filled with the value first + k (so each one can be traced)."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    images = (first + np.arange(len(labels), dtype=np.uint8))[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(channels, 3)
    return images, labels


def test_add_synthetic_takes_the_first_images_of_each_class_per_class():
    real, synthetic = tagged([8, 4, 1]), tagged([10, 10, 10], first=100)
    data = AddSynthetic(real, synthetic, 1.0)
    added = data.labels[data.is_synthetic]
    assert np.bincount(added).tolist() == [8, 4, 1] and data.n_synthetic == 13 and len(data) == 26  # not 13 across classes
    firsts = [100 + 10 * c + k for c, n in enumerate([8, 4, 1]) for k in range(n)]
    assert data.images[data.is_synthetic][:, 0, 0, 0].tolist() == firsts and data.images[:13, 0, 0, 0].tolist() == list(range(13))
    half = AddSynthetic(real, synthetic, 0.5)  # round(4), round(2), round(0.5) = 1: a prefix of each class
    assert half.images[half.is_synthetic][:, 0, 0, 0].tolist() == [100, 101, 102, 103, 110, 111, 120]
    assert data.sample_weight is None and AddSynthetic(real, synthetic, 1.0, weight=0.5).sample_weight.tolist() == [1.0] * 13 + [0.5] * 13
    only = SyntheticOnly(real, synthetic)
    assert np.bincount(only.labels).tolist() == [8, 4, 1] and only.is_synthetic.all() and only.images[:, 0, 0, 0].tolist() == firsts
    with pytest.raises(UserError, match="ratio 2: the synthetic set has 10 image.s. of class 0, 16 are needed"):
        AddSynthetic(real, synthetic, 2.0)
    # items: the image as the classifier sees it, or a transform of the PIL image; provenance says where each came from
    image, label = data[25]
    assert torch.equal(image, to_model_tensor(data.images[25:26])[0]) and label == 2
    assert data.provenance(25) == (True, -1) and data.provenance(3) == (False, 3)
    mapped = AddSynthetic(real, synthetic, 1.0, transform=lambda img: np.asarray(img).mean(), target_transform=lambda y: y + 10,
                          real_index=np.arange(13) + 50)
    assert mapped[25] == (120.0, 12) and mapped.provenance(3) == (False, 53)
    # mix_real_synthetic adds the same images, as a ConcatDataset of your own datasets
    class Items(torch.utils.data.Dataset):
        def __init__(self, images, labels):
            self.images, self.labels = images, labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return Image.fromarray(self.images[i, ..., 0]), self.labels[i : i + 1]

    mixed = mix_real_synthetic(Items(*real), Items(*synthetic), 1.0)
    assert np.array_equal(synthetic[0][mixed.datasets[1].indices], data.images[data.is_synthetic])
    assert np.array_equal(AddSynthetic(Items(*real), Items(*synthetic), 1.0).images, data.images)  # any dataset of items


def test_a_top_up_adds_target_minus_count_per_class_and_takes_a_set_without_the_largest_class():
    real, balance_set = tagged([8, 4, 1]), tagged([0, 4, 7], first=100)  # generate --balance: none of the largest class
    data = TopUp(real, balance_set)
    assert np.bincount(data.labels).tolist() == [8, 8, 8] and np.bincount(data.labels[data.is_synthetic], minlength=3).tolist() == [0, 4, 7]
    five = TopUp(real, balance_set, 5)
    assert np.bincount(five.labels[five.is_synthetic], minlength=3).tolist() == [0, 1, 4]  # none past the target
    assert five.images[five.is_synthetic][:, 0, 0, 0].tolist() == [100, 104, 105, 106, 107]
    with pytest.raises(UserError, match="has 0 image.s. of class 0, 2 are needed"):
        TopUp(real, balance_set, 10)


def variation_set(real_labels: np.ndarray, real_index: np.ndarray, per_real: int = 3, noise: int = 2):
    """`per_real` variations of every real image but the last of each class (value 100 + 10 x its position + k) and
    `noise` images drawn from noise (value 250), in a shuffled order: (images, labels, source_index)."""
    rows = [(100 + 10 * i + k, c, int(real_index[i])) for i, c in enumerate(real_labels) for k in range(per_real)
            if i != np.flatnonzero(real_labels == c)[-1]] + [(250, 0, -1)] * noise
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    values, labels, sources = (np.array(column) for column in zip(*rows))
    images = values.astype(np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2)
    return images, labels.astype(np.int64), sources.astype(np.int64)


def test_replace_swaps_a_drawn_image_only_for_its_own_variations_with_probability_p():
    real = tagged([6, 6, 6], first=0)  # real image i has value i, and is image 40 + i of the train split
    real_index = np.arange(18) + 40
    synthetic = variation_set(real[1], real_index)
    data = ReplaceWithVariations(real, synthetic, 0.3, real_index=real_index)
    assert len(data) == 18 and data.n_synthetic == 45 and not data.is_synthetic.any()
    assert data.variation_count.tolist() == ([3] * 5 + [0]) * 3
    swapped = kept = 0
    for batch in ArmBatches(data, 8, seed=0, steps=400):
        x, y = batch  # unpacks as (images, labels)
        real_x = to_model_tensor(real[0])[batch.index]
        is_swapped = batch.variation >= 0
        assert torch.equal(x[~is_swapped], real_x[~is_swapped]) and torch.equal(y, torch.from_numpy(real[1])[batch.index])
        v, i = batch.variation[is_swapped], batch.index[is_swapped]
        assert (data.variation_source[v.numpy()] == real_index[i.numpy()]).all()  # only ever one of its own variations
        assert torch.equal(x[is_swapped], to_model_tensor(data.variations)[v])
        has = torch.from_numpy(data.variation_count)[batch.index] > 0
        assert not is_swapped[~has].any()  # no variation (the last of each class): never swapped
        swapped, kept = swapped + int(is_swapped.sum()), kept + int((~is_swapped & has).sum())
    assert 0.25 < swapped / (swapped + kept) < 0.35
    # every variation of an image comes up; probabilities per class; the variation's weight
    by_class = ReplaceWithVariations(real, synthetic, {0: 0.0, 1: 0.5, 2: 1.0}, real_index=real_index, weight=0.25)
    seen = set()
    for batch in ArmBatches(by_class, 18, seed=1, steps=100):
        labels, has = batch.y, torch.from_numpy(by_class.variation_count)[batch.index] > 0
        swap = batch.variation >= 0
        assert not swap[labels == 0].any() and swap[(labels == 2) & has].all()
        assert torch.equal(batch.weight, torch.where(swap, 0.25, 1.0))
        seen.update(batch.variation[swap].tolist())
    assert len(seen) == 30  # every variation of classes 1 and 2 (5 images with 3 variations each, per class)
    with pytest.raises(UserError, match="no variation of these real images"):
        ReplaceWithVariations(real, synthetic, 0.5)  # the sources are images 40.., and real_index says 0..17
    # a translation (generate --translate) starts from a real image of another class: never swapped in under that image's label
    images, labels, sources = synthetic
    crossed = labels.copy()
    crossed[np.flatnonzero(sources >= 0)[0]] = (crossed[np.flatnonzero(sources >= 0)[0]] + 1) % 3
    with pytest.raises(UserError, match=r"starts from the real image 4\d of class \d \(a translation, generate --translate\)"):
        ReplaceWithVariations(real, (images, crossed, sources), 0.5, real_index=real_index)


def test_a_synthetic_folder_is_read_in_its_index_order_with_its_links(tmp_path):
    real_images, real_labels = tagged([3, 3])
    images, labels, sources = variation_set(real_labels, np.arange(6), per_real=2, noise=0)
    files = write_synthetic(tmp_path / "syn", images, labels, EVAL_NAMES)
    table = pd.read_csv(tmp_path / "syn" / "metadata.csv").assign(source_index=sources)
    table.sample(frac=1, random_state=0).to_csv(tmp_path / "syn" / "metadata.csv", index=False)  # listed in any order
    folder = SynthDataset(tmp_path / "syn")
    order = np.lexsort((files, labels))
    from_folder = AddSynthetic((real_images, real_labels), folder, 1.0)  # the first 3 of each class in index order
    assert np.array_equal(from_folder.images, AddSynthetic((real_images, real_labels), (images[order], labels[order]), 1.0).images)
    firsts = np.concatenate([np.flatnonzero(labels[order] == c)[:3] for c in (0, 1)])
    assert from_folder.source_index[from_folder.is_synthetic].tolist() == sources[order][firsts].tolist()
    replace = ReplaceWithVariations((real_images, real_labels), folder, 1.0)  # grouped by source, each group in index order
    assert np.array_equal(replace.variations, images[order][np.argsort(sources[order], kind="stable")])
    assert (replace.variation_source == np.sort(sources)).all() and replace.variation_count.tolist() == [2, 2, 0, 2, 2, 0]


def train_plain(data: ArmDataset, cfg: EvaluateConfig, seed: int, stream: str, val, test, num_classes: int, **batches):
    """A plain PyTorch loop: the harness's network and initial weights, Adam and its schedule, the arm's batches,
    checkpoint selection on val (AUC, ties to ACC, then the earlier step); returns the selected step, val and test scores,
    the test predictions and the loss at every evaluation."""
    model = initial_classifier(cfg, data.images.shape[-1], num_classes, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted({max(1, int(m * cfg.steps)) for m in cfg.milestones}), gamma=cfg.gamma)
    best, losses = None, []
    model.train()
    for step, batch in enumerate(ArmBatches(data, cfg.batch_size, seed, stream, steps=cfg.steps, **batches), start=1):
        loss = batch.loss(model(batch.x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_scores = classification_metrics(val.labels, predict(model, to_model_tensor(val.images)))
            losses.append(float(loss.detach()))
            if best is None or (val_scores["auc"], val_scores["acc"]) > best[0]:
                best = ((val_scores["auc"], val_scores["acc"]), step, val_scores, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[3])
    test_probs = predict(model, to_model_tensor(test.images))
    return best[1], best[2], classification_metrics(test.labels, test_probs), test_probs.argmax(1).tolist(), losses


def test_a_plain_pytorch_loop_over_the_wrappers_reproduces_the_evaluate_arms(eval_run, tmp_path):
    arms = ["real+synthetic", "real+synthetic+classic", "real+replace"]
    run = eval_run("plain", 8, synthetic=16, arms=arms, ratios=[1], replace_p=[0.5], seeds=[0, 1], steps=9)
    regime = load_regime(open_run(run), need_synthetic=False, show_progress=False)
    table = pd.read_csv(run / "synthetic" / "metadata.csv")  # the synthetic images become variations of the real ones
    table["source_index"] = [int(regime.train_indices[regime.train.labels == c][i % 8]) for c in (0, 1) for i in range(16)]
    table.to_csv(run / "synthetic" / "metadata.csv", index=False)
    rows = pd.DataFrame(evaluate([run], tmp_path / "report", show_progress=False)["rows"]).set_index(["arm", "seed"])

    # a user's side: the real training images (the run's subset), the synthetic folder, val and test
    recipe = open_run(run).recipe
    cfg, real = recipe.evaluate, (regime.train.images, regime.train.labels)
    val, test = load_split(recipe.data, "val"), load_split(recipe.data, "test")
    folder = SynthDataset(run / "synthetic")
    wrappers = {
        "real+synthetic 1x": (AddSynthetic(real, folder, 1.0), {}),
        "real+synthetic+classic 1x": (AddSynthetic(real, folder, 1.0), {"augment": classic(cfg.classic)}),
        "real+replace p0.5": (ReplaceWithVariations(real, folder, 0.5, real_index=regime.train_indices), {}),
    }
    for (arm, seed), row in rows.iterrows():
        data, options = wrappers[arm]
        best_step, val_scores, test_scores, test_pred, losses = train_plain(data, cfg, seed, arm, val, test, 2, **options)
        assert (best_step, val_scores["acc"], val_scores["auc"], test_scores["acc"], test_scores["auc"], test_pred) == (
            row["best_step"], row["val_acc"], row["val_auc"], row["test_acc"], row["test_auc"], row["test_pred"]), (arm, seed)
        assert losses == [point["loss"] for point in row["curve"]], (arm, seed)  # the very training losses, to the bit
        assert row["n_synthetic"] == data.n_synthetic
    assert len({tuple(point["loss"] for point in curve) for curve in rows["curve"]}) == len(rows)  # every arm and seed its own


def test_soft_labels_equal_to_the_one_hot_labels_train_exactly_the_hard_label_arm():
    from synthaug.classifier.harness import train_classifier
    from synthaug.data.images import ImageSet
    from synthaug.data.synthetic import SyntheticImages

    rng = np.random.default_rng(0)
    real = (rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), np.repeat([0, 1, 2], 4))
    images, labels = rng.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8), np.repeat([0, 1, 2], 10)
    one_hot = SyntheticImages(ImageSet(images, labels, ["a", "b", "c"]), [], np.full(30, -1), np.eye(3, dtype=np.float32)[labels])
    hard, soft = AddSynthetic(real, one_hot, 2.0), AddSynthetic(real, one_hot, 2.0, soft_labels=True)
    assert hard.soft_targets is None and soft.soft_targets.shape == (36, 3)
    assert torch.equal(soft[20][1], torch.eye(3)[soft.labels[20]])  # the wrapper returns the probability vector
    cfg = EvaluateConfig(classifier="small_cnn", width=4, steps=5, batch_size=8, eval_every=5)
    val = to_model_tensor(real[0]), torch.from_numpy(real[1])
    trained = [train_classifier(to_model_tensor(d.images), torch.from_numpy(d.labels), *val, cfg, 0, num_classes=3, show_progress=False,
                                soft_targets=None if d.soft_targets is None else torch.from_numpy(d.soft_targets))[0] for d in (hard, soft)]
    assert all(torch.equal(a, b) for a, b in zip(trained[0].state_dict().values(), trained[1].state_dict().values()))
    # soft labels that say otherwise train another model; a set without soft labels refuses the soft arm in one line
    other = SyntheticImages(one_hot.images, [], one_hot.source_index, np.full((30, 3), 1 / 3, dtype=np.float32))
    flat = AddSynthetic(real, other, 2.0, soft_labels=True)
    moved = train_classifier(to_model_tensor(flat.images), torch.from_numpy(flat.labels), *val, cfg, 0, num_classes=3, show_progress=False,
                             soft_targets=torch.from_numpy(flat.soft_targets))[0]
    assert not all(torch.equal(a, b) for a, b in zip(trained[0].state_dict().values(), moved.state_dict().values()))
    with pytest.raises(UserError, match="has no soft labels"):
        AddSynthetic(real, (images, labels), 1.0, soft_labels=True)


def test_whole_synthetic_takes_every_image_of_the_classes_and_no_real_one():
    from synthaug.data.arms import WholeSynthetic

    synthetic = tagged([5, 3, 7], first=50)
    data = WholeSynthetic(synthetic, classes=[0, 2])
    assert np.bincount(data.labels).tolist() == [5, 0, 7] and data.is_synthetic.all() and data.n_synthetic == 12
    with pytest.raises(UserError, match="no image of the classes"):
        WholeSynthetic(tagged([0, 3]), classes=[0])
