"""synthaug.classifier: classical augmentation and the seeded classifier training of evaluate and audit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_EVAL, make_images
from sklearn.metrics import roc_auc_score

from synthaug.classifier.harness import class_weights, classic_augment, classification_metrics, logit_adjustment, train_classifier
from synthaug.data.arms import Replacement, balanced_indices
from synthaug.recipe.sections import ClassicAugConfig, EvaluateConfig


def tensors(images, labels):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, torch.from_numpy(labels.astype(np.int64))


def test_same_seed_same_numbers_other_seed_other_weights():
    x, y = tensors(*make_images(10, 2, 12, 1, seed=3))
    cfg = EvaluateConfig(**TINY_EVAL)

    def weights(seed, augment=None):
        model, info = train_classifier(x, y, x, y, cfg, seed, augment=augment, show_progress=False)
        return torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()]), info

    a, info_a = weights(0, ClassicAugConfig())
    torch.manual_seed(1234)  # the global stream is not what seeds training
    b, info_b = weights(0, ClassicAugConfig())
    assert torch.equal(a, b) and info_a.curve == info_b.curve and info_a.best_step in (3, 6)
    assert not torch.equal(a, weights(1, ClassicAugConfig())[0])


def test_classic_augment_is_seeded_and_stays_in_range():
    x = torch.rand(5, 1, 12, 12) * 2 - 1
    cfg = ClassicAugConfig(vflip=True)
    a = classic_augment(x, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(a, classic_augment(x, cfg, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, classic_augment(x, cfg, torch.Generator().manual_seed(1)))
    none = ClassicAugConfig(hflip=False, rotate_deg=0, shift=0, brightness=0, contrast=0)
    assert torch.equal(classic_augment(x, none, torch.Generator()), x)


def test_a_replaced_batch_holds_only_variations_of_the_real_images_drawn():
    # real image i is filled with the value i; its variations with i + 0.1 * (k + 1); image 3 has none
    real = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 1, 2, 2).clone()
    counts = torch.tensor([2, 1, 3, 0])
    starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    values = [i + 0.1 * (k + 1) for i in range(4) for k in range(int(counts[i]))]
    variations = torch.tensor(values)[:, None, None, None].expand(len(values), 1, 2, 2).clone()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(4, (256,), generator=gen)
    swap_all = Replacement(1.0, variations, starts, counts, weight=0.5)
    x, weight = swap_all.apply(idx, real[idx], gen, None)
    for drawn, image, w in zip(idx.tolist(), x[:, 0, 0, 0].tolist(), weight.tolist()):
        if counts[drawn] == 0:
            assert image == drawn and w == 1.0  # nothing to swap in: the real image, full weight
        else:
            assert round(image - drawn, 4) in {round(0.1 * (k + 1), 4) for k in range(int(counts[drawn]))} and w == 0.5
    half, _ = Replacement(0.5, variations, starts, counts).apply(idx, real[idx], gen, None)
    swapped = (half[:, 0, 0, 0] != idx.float())[counts[idx] > 0].float().mean()
    assert 0.35 < swapped < 0.65


def test_rot90_gives_the_eight_symmetries_of_the_square():
    image = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3) / 8 * 2 - 1
    cfg = ClassicAugConfig(hflip=True, vflip=False, rot90=True, rotate_deg=0, shift=0, brightness=0, contrast=0)
    out = classic_augment(image.repeat(200, 1, 1, 1), cfg, torch.Generator().manual_seed(1))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_balanced_metrics_and_a_two_class_choice_of_more_classes():
    labels = np.array([0] * 8 + [3] * 2)
    probs = np.full((10, 8), 0.01)
    probs[:, 0] = np.linspace(0.9, 0.5, 10)  # class 0 predicted for all but the last image
    probs[9, 3] = 0.95
    m = classification_metrics(labels, probs / probs.sum(1, keepdims=True), rare=[3, 5])
    assert m["acc"] == pytest.approx(0.9) and m["recall"][0] == 1.0 and m["recall"][3] == 0.5
    assert m["bacc"] == pytest.approx(0.75)  # over the classes present (0 and 3), not the 8 outputs
    assert m["f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert m["rare_recall"] == pytest.approx(0.5)  # class 5 is absent from the labels: not counted
    # two classes chosen of eight (data.classes: [0, 3]): a binary AUC on the two classes' renormalised probabilities
    assert m["auc"] == pytest.approx(roc_auc_score(labels == 3, probs[:, 3] / (probs[:, 0] + probs[:, 3])))
    assert np.isnan(classification_metrics(labels, probs)["rare_recall"])


def test_class_balanced_batches_draw_classes_equally():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 1 + [4] * 10)  # class 3 has no image
    gen = torch.Generator().manual_seed(0)
    batches = balanced_indices(labels, 8, gen)
    drawn = torch.stack([next(batches) for _ in range(400)])
    per_batch = torch.stack([torch.bincount(labels[b], minlength=5) for b in drawn])
    assert (per_batch[:, 3] == 0).all() and (per_batch[:, [0, 1, 2, 4]] == 2).all()  # 8 places, 4 classes: 2 each
    b12 = balanced_indices(labels, 10, torch.Generator().manual_seed(0))  # 10 = 4 x 2 + 2 left over, drawn among the classes
    counts = torch.stack([torch.bincount(labels[next(b12)], minlength=5) for _ in range(2000)]).sum(0).float()
    assert counts[3] == 0 and counts[[0, 1, 2, 4]].sub(5000).abs().max() < 150
    # within a class, every image comes once per round: the 5 images of class 1 equally often
    ones = torch.bincount(drawn.flatten()[labels[drawn.flatten()] == 1] - 50, minlength=5)
    assert ones.max() - ones.min() <= 1
    # training with it is seeded and differs from plain batches
    x, y = tensors(*make_images(10, 2, 12, 1, seed=3))
    cfg = EvaluateConfig(**TINY_EVAL)
    a, b, plain = (train_classifier(x[:12], y[:12], x, y, cfg, 0, show_progress=False, balanced=bal)[1].curve for bal in (True, True, False))
    assert a == b and a != plain


def test_class_weights_and_logit_adjustment():
    labels = np.array([0] * 100 + [1] * 10 + [3] * 1)
    inverse = class_weights(labels, 4, "inverse")
    assert inverse.tolist() == [0.01, 0.1, 0.0, 1.0]
    effective = class_weights(labels, 4, "effective", beta=0.9)
    assert effective[3] == pytest.approx(1.0) and effective[1] == pytest.approx(0.1 / (1 - 0.9 ** 10)) and effective[2] == 0
    assert class_weights(labels, 4, "effective", beta=0.999)[0] < class_weights(labels, 4, "effective", beta=0.999)[1]
    adjust = logit_adjustment(labels, 4, tau=2.0)
    assert adjust[0] == pytest.approx(2 * np.log(100 / 111)) and adjust[3] == pytest.approx(2 * np.log(1 / 111)) and adjust[2] == 0
    x, y = tensors(*make_images(10, 2, 12, 1, seed=3))
    cfg = EvaluateConfig(**TINY_EVAL)

    def weights(**options):
        model, _ = train_classifier(x, y, x, y, cfg, 0, show_progress=False, **options)
        return torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()])

    plain = weights()
    assert torch.equal(plain, weights(logit_adjust=torch.zeros(2)))  # an addition to the training logits, nothing else
    assert not torch.equal(plain, weights(logit_adjust=torch.tensor([0.0, -3.0])))


def test_replacement_probability_per_image():
    real = torch.zeros(4, 1, 2, 2)
    variations = torch.ones(4, 1, 2, 2)
    starts, counts = torch.arange(4), torch.ones(4, dtype=torch.long)
    p = torch.tensor([1.0, 1.0, 0.0, 0.0])  # images 0 and 1 always swapped, 2 and 3 never
    idx = torch.randint(4, (200,), generator=torch.Generator().manual_seed(0))
    x, _ = Replacement(p, variations, starts, counts).apply(idx, real[idx], torch.Generator().manual_seed(1), None)
    assert torch.equal(x[:, 0, 0, 0], (idx < 2).float())
