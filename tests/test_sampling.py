"""synthaug.sampling: per-image generators, the denoise loop's determinism and conditioning, schedulers, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.recipe.sections import DiffusionConfig, ModelConfig
from synthaug.diffusion.sampling import denoise, image_generator, image_grid, sampling_scheduler

TRAIN_SCHEDULER = build_noise_scheduler(DiffusionConfig(num_train_timesteps=50))


def tiny_unet(conditioning: str = "per_class", num_classes: int = 2):
    torch.manual_seed(0)
    return build_unet(ModelConfig(**TINY_MODEL, sample_size=8, conditioning=conditioning), 1, num_classes).eval()


def test_image_generators_depend_on_the_key_alone():
    draw = lambda gen: torch.randn(4, generator=gen)
    first = draw(image_generator(0, 1, 5))
    torch.manual_seed(99)  # the global stream has no say
    assert torch.equal(first, draw(image_generator(0, 1, 5)))
    assert torch.equal(first, draw(image_generator(0, 1, 5, attempt=0)))
    others = [image_generator(1, 1, 5), image_generator(0, 0, 5), image_generator(0, 1, 6), image_generator(0, 1, 5, attempt=1)]
    assert all(not torch.equal(first, draw(gen)) for gen in others)


@pytest.mark.parametrize("sampler", ["dpm-solver++", "ddim", "ddpm"])
def test_denoise_gives_each_generator_its_own_image(sampler):
    unet = tiny_unet()

    def images(keys):
        scheduler = sampling_scheduler(TRAIN_SCHEDULER, sampler, 3)
        return denoise(unet, scheduler, [image_generator(0, 0, k) for k in keys])

    a = images([0, 1])
    assert a.shape == (2, 1, 8, 8) and a.min() >= -1 and a.max() <= 1 and not torch.equal(a[0], a[1])
    torch.manual_seed(123)  # ddpm adds noise at every step: from the image's generator, not the global stream
    assert torch.equal(images([0, 1]), a)
    assert torch.equal(images([1, 0]), a.flip(0))  # the order in the batch does not move an image's noise


def test_class_conditional_denoise_needs_labels_and_guidance_changes_the_images():
    unet = tiny_unet("class_conditional")
    scheduler = lambda: sampling_scheduler(TRAIN_SCHEDULER, "ddim", 3)
    generators = lambda: [image_generator(0, 0, k) for k in range(2)]
    with pytest.raises(ValueError, match="needs labels"):
        denoise(unet, scheduler(), generators())
    plain = denoise(unet, scheduler(), generators(), [0, 1])
    assert torch.equal(denoise(unet, scheduler(), generators(), [0, 1], guidance_scale=1.0), plain)
    assert not torch.equal(denoise(unet, scheduler(), generators(), [0, 1], guidance_scale=3.0), plain)
    assert not torch.equal(denoise(unet, scheduler(), generators(), [1, 0]), plain)


def test_sampling_scheduler_steps():
    assert len(sampling_scheduler(TRAIN_SCHEDULER, "dpm-solver++", None).timesteps) == 20
    assert len(sampling_scheduler(TRAIN_SCHEDULER, "ddim", 7).timesteps) == 7
    assert len(sampling_scheduler(TRAIN_SCHEDULER, "ddpm", None).timesteps) == 50  # every training timestep
    with pytest.raises(ValueError, match="sampler must be one of"):
        sampling_scheduler(TRAIN_SCHEDULER, "euler", 3)


def test_image_grid_tiles_in_rows():
    images = np.stack([np.full((2, 3, 1), k + 1, np.uint8) for k in range(5)])
    grid = image_grid(images)  # 5 images: 3 columns, 2 rows, the last cell empty
    assert grid.shape == (4, 9, 1)
    assert grid[::2, ::3, 0].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert image_grid(images, columns=5).shape == (2, 15, 1)


def test_a_progress_wrapper_sees_every_timestep_and_changes_nothing():
    unet = tiny_unet("class_conditional")
    seen = []

    def progress(timesteps):
        for t in timesteps:
            seen.append(int(t))
            yield t

    scheduler = lambda: sampling_scheduler(TRAIN_SCHEDULER, "dpm-solver++", 4)  # noqa: E731
    generators = lambda: [image_generator(0, 1, k) for k in range(2)]  # noqa: E731
    watched = denoise(unet, scheduler(), generators(), [1, 1], guidance_scale=2.0, progress=progress)
    assert seen == scheduler().timesteps.tolist()
    assert torch.equal(watched, denoise(unet, scheduler(), generators(), [1, 1], guidance_scale=2.0))
