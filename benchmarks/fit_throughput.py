"""Training throughput: synthaug's `fit` step against a reference loop written the way diffusers'
examples/unconditional_image_generation/train_unconditional.py does it (a DataLoader over PIL images
with per-sample transforms, fp32), with the same UNet, batch, optimizer and EMA.

    python benchmarks/fit_throughput.py --data-root ../shared/data/medmnist

Prints images/s of both and their ratio. synthaug's figure is read from the metrics.csv of a real
`fit` run (median over the timed steps), so it measures the product, not a copy of its loop.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from synthaug.data.images import load_split
from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.recipe.recipe import recipe_from_dict
from synthaug.core.runtime import pick_device
from synthaug.diffusion.training import fit


class PILImages(Dataset):
    """What train_unconditional.py iterates: PIL images, transformed one at a time in __getitem__."""

    def __init__(self, images: np.ndarray, size: int):
        self.images = [Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img) for img in images]
        self.size = size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        # Resize, CenterCrop, RandomHorizontalFlip, ToTensor, Normalize([0.5], [0.5]) without torchvision.
        img = self.images[i].resize((self.size, self.size), Image.Resampling.BILINEAR)
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(img, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array if array.ndim == 3 else array[..., None]).permute(2, 0, 1)
        return {"input": (tensor - 0.5) / 0.5}


def reference_images_per_s(recipe, images: np.ndarray, steps: int, warmup: int) -> float:
    device = pick_device()
    bf16 = recipe.train.mixed_precision == "bf16"
    torch.manual_seed(0)
    unet = build_unet(recipe.model, images.shape[-1], num_classes=1).to(device)
    scheduler = build_noise_scheduler(recipe.diffusion)
    ema = EMAModel(unet.parameters(), decay=recipe.train.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.train.lr)
    loader = DataLoader(PILImages(images, recipe.data.size), batch_size=recipe.train.batch_size, shuffle=True, num_workers=0, drop_last=True)
    times, done = [], 0
    unet.train()
    while done < steps + warmup:
        for batch in loader:
            tick = time.perf_counter()
            clean = batch["input"].to(device)
            noise = torch.randn(clean.shape, device=device)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],), device=device).long()
            noisy = scheduler.add_noise(clean, noise, t)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.mse_loss(unet(noisy, t).sample.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            ema.step(unet.parameters())
            loss.item()  # wait for the GPU, as fit's logging does
            done += 1
            if done > warmup:
                times.append(time.perf_counter() - tick)
            if done >= steps + warmup:
                break
    # The DataLoader's per-sample work happens between the timed regions above; time it too.
    tick = time.perf_counter()
    for _ in zip(range(steps), iter(loader)):
        pass
    loading = (time.perf_counter() - tick) / steps
    return recipe.train.batch_size / (statistics.median(times) + loading)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data/medmnist")
    parser.add_argument("--dataset", default="bloodmnist")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--channels", default="32,64,64")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no", help="bf16: autocast in both loops (GPU)")
    args = parser.parse_args()

    channels = [int(c) for c in args.channels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        recipe = recipe_from_dict(
            {
                "name": "bench",
                "output_dir": tmp,
                "data": {"medmnist": args.dataset, "root": args.data_root, "classes": [0]},
                "model": {"block_out_channels": channels, "attention_levels": [i == 1 for i in range(len(channels))]},
                "train": {"steps": args.steps + args.warmup, "batch_size": args.batch_size, "checkpoint_every": 10**6, "ema_decay": 0.999,
                          "mixed_precision": args.mixed_precision},
            }
        )
        real = load_split(recipe.data, "train")
        images = real.images[real.labels == 0]
        reference = reference_images_per_s(recipe, images, args.steps, args.warmup)
        run = fit(recipe, show_progress=False)
        metrics = pd.read_csv(run.metrics)
        ours = float(metrics[metrics["step"] > args.warmup]["images_per_s"].median())

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"hardware: {platform.processor() or platform.machine()}, {gpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"data: {args.dataset} class 0 ({len(images)} images, {images.shape[1]} px, {images.shape[-1]} channels); UNet channels {channels}, batch {args.batch_size}, {args.mixed_precision if args.mixed_precision != 'no' else 'fp32'}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"reference (DataLoader over PIL, per-sample transforms): {reference:8.1f} images/s")
    print(f"synthaug fit (in-memory tensor batches):                 {ours:8.1f} images/s")
    print(f"ratio synthaug / reference: {ours / reference:.2f}x")


if __name__ == "__main__":
    main()
