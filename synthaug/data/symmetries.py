"""The label-preserving symmetries of a square image: flips and quarter turns (with both, the 8 of the dihedral group),
drawn per sample from a seeded generator. The diffusion objective and the classifier's classical augmentation both use
them, so a recipe's weights depend on this one draw order."""

from __future__ import annotations

import torch


def random_symmetries(x: torch.Tensor, gen: torch.Generator, hflip: bool = False, vflip: bool = False, rot90: bool = False) -> torch.Tensor:
    """Each image of a batch (N, C, H, W) flipped left-right and up-down with probability 1/2 and turned by a uniform
    number of quarter turns, as asked; the draws come from `gen` (on the CPU) in that order, one per asked symmetry.

    The order is fixed: the weights of every recipe trained so far depend on it.
    """
    n = x.shape[0]

    def per_sample(chosen: torch.Tensor) -> torch.Tensor:  # a (N,) mask drawn on the CPU, broadcast over the images
        return chosen.to(x.device)[:, None, None, None]

    if hflip:
        x = torch.where(per_sample(torch.rand(n, generator=gen) < 0.5), x.flip(-1), x)
    if vflip:
        x = torch.where(per_sample(torch.rand(n, generator=gen) < 0.5), x.flip(-2), x)
    if rot90:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rot90: quarter turns keep the shape of square images only, got {tuple(x.shape[-2:])}")
        quarter = torch.randint(4, (n,), generator=gen)
        for k in (1, 2, 3):
            x = torch.where(per_sample(quarter == k), x.rot90(k, (-2, -1)), x)
    return x
