"""`SynthaugPipeline`: a finished model folder (`<run>/models/<model_dir>`) as a diffusers pipeline.

    pipe = SynthaugPipeline.from_pretrained("runs/quickstart/models/all")
    images = pipe(class_labels=[0, 1], generator=torch.Generator().manual_seed(0)).images   # two PIL images

`fit` saves each model as diffusers' `DDPMPipeline` layout (model_index.json, unet/, scheduler/); loading it through this
subclass keeps the folder's components (UNet2DModel, the training DDPMScheduler) and swaps only the sampling, which is
`sampling.denoise`, the loop `generate` uses: the same model, sampler, steps, guidance and per-image generators give
`generate`'s pixels (on CPU, for the same batch of 16 consecutive indices: see generate.BLOCK_SIZE). `save_pretrained`
writes that same layout, so diffusers' own `DiffusionPipeline.from_pretrained` opens every folder (as DDPMPipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDPMPipeline, DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from synthaug.diffusion.sampling import SAMPLERS, denoise, sampling_scheduler
from synthaug.diffusion.unet import null_class
from synthaug.storage.pixels import to_uint8

OUTPUT_TYPES = ("pil", "np", "pt")


class SynthaugPipeline(DiffusionPipeline):
    """A synthaug model: `unet` (UNet2DModel; class-conditional when `num_class_embeds` is set, its last embedding the null
    class) and `scheduler` (the training DDPMScheduler, from which each call builds its sampler's scheduler).

    `from_pretrained(folder)` loads any finished model folder, including those whose model_index.json names
    DDPMPipeline (every run `fit` writes): the class it is called on decides the pipeline, the folder the components.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_classes(self) -> int | None:
        """The classes of a class-conditional model (its null class is this index), None for a one-class model."""
        return null_class(self.unet)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """Save in the layout `fit` writes (diffusers' DDPMPipeline: model_index.json, unet/, scheduler/): diffusers'
        `DiffusionPipeline.from_pretrained` opens it as DDPMPipeline, this class's `from_pretrained` as a SynthaugPipeline.
        (Named SynthaugPipeline, model_index.json would name a class that diffusers does not have.)"""
        DDPMPipeline(unet=self.unet, scheduler=self.scheduler).save_pretrained(save_directory, **kwargs)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int] | torch.Tensor | None = None,
        num_images: int | None = None,
        guidance_scale: float = 1.0,
        num_inference_steps: int | None = None,
        sampler: str = "dpm-solver++",
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample images.

        class_labels: the class of each image; required by a class-conditional model, refused by a per-class one. One
            label with `num_images` N gives N images of that class.
        num_images: how many images (default: one per label, else 1).
        guidance_scale: classifier-free guidance against the null class (class-conditional models; 1: none).
        num_inference_steps: sampler steps (default: dpm-solver++ 20, ddim 50, ddpm every training timestep).
        sampler: "dpm-solver++", "ddim" or "ddpm".
        generator: one torch.Generator per image (what `generate` uses: `sampling.image_generator(seed, class, index)`),
            or one generator from which each image's seed is drawn, or None (torch's global generator).
        output_type: "pil" (PIL images, "L" or "RGB"; pixels rounded as generate rounds them), "np" (float32
            (N, H, W, C) in [0, 1]) or "pt" (float32 (N, C, H, W) in [0, 1]).
        return_dict: False returns `(images,)`.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if num_images is not None and (isinstance(num_images, bool) or int(num_images) != num_images or num_images < 1):
            raise ValueError(f"num_images must be a whole number >= 1, got {num_images}")
        labels = self._labels(class_labels, num_images)
        n = len(labels) if labels is not None else 1 if num_images is None else int(num_images)
        if guidance_scale != 1.0 and labels is None:
            raise ValueError("guidance_scale applies to class-conditional models only (this model has one class)")
        train_steps = self.scheduler.config.num_train_timesteps
        if num_inference_steps is not None and not 0 < num_inference_steps <= train_steps:
            raise ValueError(f"num_inference_steps must be in 1..{train_steps} (the training timesteps), got {num_inference_steps}")
        scheduler = sampling_scheduler(self.scheduler, sampler, num_inference_steps)
        images = denoise(self.unet, scheduler, self._generators(generator, n), labels, guidance_scale, progress=self.progress_bar)
        self.maybe_free_model_hooks()
        if output_type == "pil":
            output = [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in to_uint8(images)]
        else:
            unit = (images.float() / 2 + 0.5).clamp(0, 1).cpu()
            output = unit.permute(0, 2, 3, 1).numpy() if output_type == "np" else unit
        return ImagePipelineOutput(images=output) if return_dict else (output,)

    def _labels(self, class_labels, num_images: int | None) -> list[int] | None:
        """The label of each image for a class-conditional model (None for a one-class model), checked."""
        classes = self.num_classes
        if classes is None:
            if class_labels is not None:
                raise ValueError("class_labels apply to class-conditional models; this one is one class's model (a per_class run)")
            return None
        if class_labels is None:
            raise ValueError(f"class_labels are required: this model is class-conditional over classes 0..{classes - 1}")
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.reshape(-1).tolist()
        labels = [class_labels] if isinstance(class_labels, (int, np.integer)) else list(class_labels)
        if len(labels) == 1 and num_images is not None:
            labels = labels * int(num_images)
        elif num_images is not None and num_images != len(labels):
            raise ValueError(f"num_images {num_images} does not match the {len(labels)} class_labels; give one label or one per image")
        bad = [label for label in labels if isinstance(label, bool) or int(label) != label or not 0 <= int(label) < classes]
        if bad or not labels:
            raise ValueError(f"class_labels must be class indices in 0..{classes - 1}, got {bad or 'none'}")
        return [int(label) for label in labels]

    @staticmethod
    def _generators(generator, n: int) -> list[torch.Generator]:
        """One generator per image, as `denoise` takes them."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != n:
                raise ValueError(f"got {len(generator)} generators for {n} images; give one per image or a single one")
            return list(generator)
        device = generator.device if generator is not None else torch.device("cpu")
        seeds = torch.randint(0, 2**63 - 1, (n,), generator=generator, device=device).tolist()
        return [torch.Generator(device).manual_seed(seed) for seed in seeds]
