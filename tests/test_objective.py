"""synthaug.objective: label-preserving symmetries of the generator's batches, and min-SNR weights."""

import torch

from synthaug.diffusion.objective import augment_batch, min_snr_weight


def test_min_snr_weights_cap_the_easy_timesteps():
    from synthaug.diffusion.unet import build_noise_scheduler
    from synthaug.recipe.sections import DiffusionConfig

    scheduler = build_noise_scheduler(DiffusionConfig())
    t = torch.tensor([0, 100, 500, 999])
    eps = min_snr_weight(scheduler, t, 5.0, "epsilon")
    assert eps[0] < 0.01 and torch.allclose(eps[2:], torch.ones(2))  # high SNR down-weighted, noisy steps untouched
    v = min_snr_weight(scheduler, t, 5.0, "v_prediction")
    assert (v <= 1).all() and v[3] < 1 and v[0] < eps[1]


def test_augment_draws_only_symmetries_of_the_training_images():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = augment_batch(images.repeat(32, 1, 1, 1), ["hflip", "rot90"], torch.Generator().manual_seed(0))
    dihedral = [v for img in images for f in (img, img.flip(-1)) for v in (f.rot90(k, (-2, -1)) for k in range(4))]
    seen = {next(i for i, d in enumerate(dihedral) if torch.equal(o, d)) for o in out}  # raises if one is no symmetry
    assert len(seen) > 8  # many of the 16 (2 images x 8 symmetries) appear, not just the originals
    assert torch.equal(augment_batch(images, [], torch.Generator()), images)
