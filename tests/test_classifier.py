"""synthaug.classifier: classical augmentation and the seeded classifier training of evaluate and audit."""

from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_EVAL, make_images

from synthaug.classifier.harness import Replacement, classic_augment, train_classifier
from synthaug.recipe.sections import ClassicAugConfig, EvaluateConfig


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
