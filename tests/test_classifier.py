"""synthaug.classifier: classical augmentation and the seeded classifier training of evaluate and audit."""

from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_EVAL, make_images

from synthaug.classifier import classic_augment, train_classifier
from synthaug.recipe import ClassicAugConfig, EvaluateConfig


def test_same_seed_same_numbers_other_seed_other_weights():
    images, labels = make_images(10, 2, 12, 1, seed=3)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(labels.astype(np.int64))
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
