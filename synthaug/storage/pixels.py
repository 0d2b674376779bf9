"""Pixel formats shared by every stage: uint8 images, the model's [-1, 1] float tensors, and PNG bytes."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def to_model_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded."""
    scaled = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def encode_png(pixels: np.ndarray, text: dict[str, dict] | None = None) -> bytes:
    """uint8 (H, W, C) -> 8-bit PNG bytes (grayscale or RGB); `text`: chunks of JSON, e.g. generate's provenance."""
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, json.dumps(value, sort_keys=True))
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
