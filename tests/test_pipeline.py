"""`SynthaugPipeline`: a finished model folder as a diffusers pipeline; the classes it is asked for, seeded determinism,
generate's pixels through the same denoise loop, per-class models, and the arguments it refuses.

The trained run is a tiny class-conditional model fitted for 100 steps (about 5 s) on conftest's square images (12 px;
class 0's bright square on the left, class 1's on the right), enough for the side of the square to follow the label.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_recipe_dict, untrained_run, write_class_folders
from diffusers import DDPMPipeline, DiffusionPipeline, ImagePipelineOutput
from PIL import Image

import synthaug
import synthaug.diffusion.pipeline as pipeline_module
from synthaug.diffusion import sampling
from synthaug.diffusion.pipeline import SynthaugPipeline
from synthaug.diffusion.sampling import image_generator
from synthaug.diffusion.training import fit
from synthaug.generation.generate import BLOCK_SIZE, generate
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.storage.rundir import RunDir

SIZE = 12


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> RunDir:
    root = tmp_path_factory.mktemp("pipeline")
    data = write_class_folders(root / "images", ["left", "right"], n=16, size=SIZE, channels=1, splits=True)
    raw = tiny_recipe_dict({"folder": str(data), "size": SIZE}, root / "runs", "squares", model={"conditioning": "class_conditional"},
                           train={"steps": 100, "batch_size": 16, "lr": 3e-3, "ema_decay": 0.8, "checkpoint_every": 1000, "augment": []},
                           generate={"steps": 10})
    return fit(recipe_from_dict(raw), show_progress=False)


def load(folder) -> SynthaugPipeline:
    pipe = SynthaugPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def left_minus_right(images: np.ndarray) -> np.ndarray:
    """Per image (N, H, W, C): mean of the left half minus mean of the right half."""
    return images[:, :, : SIZE // 2].mean(axis=(1, 2, 3)) - images[:, :, SIZE // 2 :].mean(axis=(1, 2, 3))


def test_a_finished_run_loads_and_draws_the_requested_classes(trained_run):
    folder = trained_run.model("all")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"  # as fit saves it
    pipe = load(folder)
    assert type(pipe) is SynthaugPipeline and synthaug.SynthaugPipeline is SynthaugPipeline
    assert pipe.num_classes == 2 and type(pipe.scheduler).__name__ == "DDPMScheduler"

    out = pipe(class_labels=[0, 1], num_inference_steps=10, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, ImagePipelineOutput) and len(out.images) == 2
    assert all(isinstance(img, Image.Image) and img.mode == "L" and img.size == (SIZE, SIZE) for img in out.images)
    arrays = pipe(class_labels=[0, 1], num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert arrays.shape == (2, SIZE, SIZE, 1) and arrays.dtype == np.float32 and 0 <= arrays.min() and arrays.max() <= 1
    assert np.array_equal(np.stack([np.asarray(img) for img in out.images])[..., None], np.round(arrays * 255).astype(np.uint8))
    (tensor,) = pipe(class_labels=1, num_images=3, num_inference_steps=10, output_type="pt", return_dict=False)
    assert tensor.shape == (3, 1, SIZE, SIZE)

    # seeded: the same generator gives the same images, another one others
    draw = lambda seed, **kw: pipe(class_labels=[0] * 8 + [1] * 8, num_inference_steps=10,  # noqa: E731
                                   generator=torch.Generator().manual_seed(seed), output_type="np", **kw).images
    first = draw(0)
    assert np.array_equal(first, draw(0)) and not np.array_equal(first, draw(1))
    # the label decides the side of the square, as in the training images
    side = left_minus_right(first)
    assert (side[:8] > 0.03).all() and (side[8:] < -0.03).all(), side.round(3)
    guided = draw(0, guidance_scale=2.0)
    assert not np.array_equal(guided, first)
    assert (left_minus_right(guided)[:8] > 0).all() and (left_minus_right(guided)[8:] < 0).all()


def test_generate_and_the_pipeline_give_the_same_pixels(trained_run, tmp_path, monkeypatch):
    out = generate(trained_run.root, per_class=BLOCK_SIZE, out=tmp_path / "syn", seed=3, show_progress=False)
    pipe = load(trained_run.model("all"))
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return sampling.denoise(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "denoise", counted)
    for c, folder in ((0, "left"), (1, "right")):
        # generate draws class c's indices 0..15 as one block, each from image_generator(seed, c, i)
        images = pipe(class_labels=[c] * BLOCK_SIZE, generator=[image_generator(3, c, i) for i in range(BLOCK_SIZE)],
                      sampler="dpm-solver++", num_inference_steps=10).images
        on_disk = [np.asarray(Image.open(out / folder / f"{c}_{i:06d}.png")) for i in range(BLOCK_SIZE)]
        assert all(np.array_equal(np.asarray(img), png) for img, png in zip(images, on_disk))
    assert len(calls) == 2  # one call of sampling.denoise per pipeline call: the one loop


def test_per_class_models_and_folders_saved_by_the_pipeline(tmp_path):
    run = untrained_run(tmp_path, names=("a", "b"))  # per_class: one unconditional 8 px model per class
    pipe = load(run.model("00_a"))
    assert pipe.num_classes is None
    images = pipe(num_images=3, sampler="ddim", num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (3, 8, 8, 1)
    ddpm = pipe(sampler="ddpm", num_inference_steps=3, generator=[torch.Generator().manual_seed(0)], output_type="np").images
    assert ddpm.shape == (1, 8, 8, 1)
    # plain diffusers reads fit's folders, and the folders the pipeline saves (the same layout): same weights both ways
    assert type(DiffusionPipeline.from_pretrained(str(run.model("00_a")))) is DDPMPipeline
    pipe.save_pretrained(str(tmp_path / "saved"))
    plain = DiffusionPipeline.from_pretrained(str(tmp_path / "saved"))
    assert type(plain) is DDPMPipeline and plain(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 1)
    again = load(tmp_path / "saved")
    for loaded in (plain, again):
        assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), loaded.unet.state_dict().values()))
    assert np.array_equal(again(num_images=3, sampler="ddim", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                                output_type="np").images, images)


def test_a_saved_class_conditional_pipeline_opens_with_diffusers_own_loader(trained_run, tmp_path):
    pipe = load(trained_run.model("all"))
    pipe.save_pretrained(str(tmp_path / "saved"))
    plain = DiffusionPipeline.from_pretrained(str(tmp_path / "saved"))  # diffusers' loader, no synthaug class named
    assert plain.unet.config.num_class_embeds == 3 and type(plain.scheduler).__name__ == "DDPMScheduler"
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), plain.unet.state_dict().values()))
    again = load(tmp_path / "saved")
    draw = lambda p: p(class_labels=[0, 1], num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np").images  # noqa: E731
    assert np.array_equal(draw(again), draw(pipe))


def test_bad_arguments_are_refused_before_sampling(tmp_path):
    single = load(untrained_run(tmp_path / "p", names=("a", "b")).model("00_a"))
    with pytest.raises(ValueError, match="class-conditional models; this one is one class"):
        single(class_labels=[0])
    with pytest.raises(ValueError, match="guidance_scale applies to class-conditional"):
        single(guidance_scale=2.0)
    with pytest.raises(ValueError, match="num_images must be a whole number >= 1, got 0"):
        single(num_images=0)
    cond = load(untrained_run(tmp_path / "c", names=("a", "b"), conditioning="class_conditional").model("all"))
    for kwargs, message in [
        ({}, "class_labels are required"),
        ({"class_labels": [0, 2]}, r"class indices in 0\.\.1, got \[2\]"),  # 2 is the null class
        ({"class_labels": [0, 1], "num_images": 3}, "does not match"),
        ({"class_labels": [0], "num_images": 0}, r"^num_images must be a whole number >= 1, got 0$"),
        ({"class_labels": [0], "num_images": 1.5}, r"^num_images must be a whole number >= 1, got 1\.5$"),
        ({"class_labels": [0, 1], "generator": [torch.Generator()]}, "1 generators for 2 images"),
        ({"class_labels": [0], "sampler": "euler"}, "sampler must be one of"),
        ({"class_labels": [0], "output_type": "latent"}, "output_type must be one of"),
        ({"class_labels": [0], "num_inference_steps": 51}, r"1\.\.50"),
    ]:
        with pytest.raises(ValueError, match=message):
            cond(**kwargs)
    steps = []
    cond.progress_bar = lambda iterable: steps.extend(iterable) or iterable  # the pipeline's progress bar watches the loop
    cond(class_labels=torch.tensor([1, 0]), num_inference_steps=4, sampler="ddim")
    assert len(steps) == 4
