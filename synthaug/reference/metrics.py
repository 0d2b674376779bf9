"""Metrics of image sets, pure functions of arrays (no recipe, no run): nearest-neighbour searches,
Fréchet distance, and precision/recall/density/coverage.

Nearest-neighbour searches run as chunked matrix products on the GPU when there is one; no block
ever exceeds CHUNK_ELEMENTS numbers, whatever the set sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from synthaug.core.runtime import pick_device

CHUNK_ELEMENTS = 2**24  # numbers per similarity block and per chunk of rows (64 MiB in float32)


MAX_CHUNK_ROWS = 4096


EDGE_TOLERANCE = 1e-9  # relative; float64 rounding of one distance computed in two different blocks


def _chunk_rows(dim: int) -> int:
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_ELEMENTS // max(dim, 1)))


def _blocks(queries, keys, prepare: Callable, device: torch.device, desc: str | None = None, show_progress: bool = False):
    """Yield (row offset, column offset, query rows, key rows) covering queries x keys in bounded blocks.

    `prepare` turns a host slice (numpy or tensor) into device rows; key chunks are prepared again for
    every query chunk, so device memory holds two chunks and one block, never a whole set.
    """
    rows = _chunk_rows(int(np.prod(queries.shape[1:])))
    total = math.ceil(len(queries) / rows) * math.ceil(len(keys) / rows)
    with tqdm(total=total, desc=desc, disable=not show_progress or desc is None, unit="block", leave=False) as bar:
        for i in range(0, len(queries), rows):
            q = prepare(queries[i : i + rows], device)
            for j in range(0, len(keys), rows):
                yield i, j, q, prepare(keys[j : j + rows], device)
                bar.update(1)


def unit_pixel_rows(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, H*W*C) rows with mean 0 and norm 1, so a dot product is a Pearson correlation."""
    rows = torch.from_numpy(np.ascontiguousarray(images)).to(device).reshape(len(images), -1).float()
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-6)  # a flat image correlates 0 with everything


@dataclass
class NearestImages:
    """For each query image: the correlation with its nearest key image, that image's index, and the symmetry that matched."""

    correlation: np.ndarray  # float32 (N,)
    index: np.ndarray  # int64 (N,), into the keys
    mirrored: np.ndarray  # bool (N,): the query's mirror image matched
    quarter_turns: np.ndarray | None = None  # int64 (N,): quarter turns of the query that matched (with `rotations`)

    def matched_view(self, key_image: np.ndarray, i: int) -> np.ndarray:
        """The key image of query i as the query saw it: mirror and quarter turns undone, to show beside the query."""
        turns = 0 if self.quarter_turns is None else int(self.quarter_turns[i])
        image = np.rot90(key_image, -turns, axes=(0, 1))
        return image[:, ::-1] if self.mirrored[i] else image


def nearest_by_correlation(
    queries: np.ndarray,
    keys: np.ndarray,
    mirror: bool = False,
    device: torch.device | str | None = None,
    show_progress: bool = False,
    exclude: np.ndarray | None = None,
    rotations: bool = False,
) -> NearestImages:
    """Each query image's most correlated key image (uint8 NHWC both); with `mirror`, keys flipped left-right count
    too, with `rotations` keys turned by quarter turns (both: all 8 symmetries of the square).
    `exclude` (int (N,)): per query, one key that does not count (-1: none), e.g. the source of a variation.

    corr(T(q), k) = corr(q, T^-1(k)), so each symmetry transforms the queries and needs no second copy of the keys.
    """
    device = pick_device(device)
    n = len(queries)
    skip = None if exclude is None else torch.as_tensor(np.asarray(exclude), dtype=torch.long, device=device)
    best = torch.full((n,), -2.0, device=device)
    index = torch.zeros(n, dtype=torch.long, device=device)
    mirrored = torch.zeros(n, dtype=torch.bool, device=device)
    turned = torch.zeros(n, dtype=torch.long, device=device)
    for turns in range(4) if rotations else (0,):
        for flipped in (False, True) if mirror else (False,):
            view = np.rot90(queries[:, :, ::-1] if flipped else queries, turns, axes=(1, 2))
            desc = "nearest training image" + (" (mirrored)" if flipped else "") + (f" ({turns} quarter turns)" if turns else "")
            for i, j, q, k in _blocks(view, keys, unit_pixel_rows, device, desc, show_progress):
                similarity = q @ k.T
                if skip is not None:
                    columns = torch.arange(j, j + len(k), device=device)[None, :]
                    similarity = similarity.masked_fill(columns == skip[i : i + len(q), None], -2.0)
                value, where = similarity.max(dim=1)
                rows = slice(i, i + len(q))
                better = value > best[rows]
                best[rows] = torch.where(better, value, best[rows])
                index[rows] = torch.where(better, where + j, index[rows])
                mirrored[rows] = torch.where(better, torch.tensor(flipped, device=device), mirrored[rows])
                turned[rows] = torch.where(better, torch.tensor(turns, device=device), turned[rows])
    return NearestImages(best.cpu().numpy(), index.cpu().numpy(), mirrored.cpu().numpy(), turned.cpu().numpy() if rotations else None)


def _to_device(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    return rows.to(device)


def _squared_distances(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return ((q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2 * q @ k.T).clamp_min(0)


def knn_distances(
    queries: torch.Tensor, keys: torch.Tensor, k: int, exclude_self: bool = False, device: torch.device | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (N, k), ascending, and indices of each query's k nearest keys.

    `exclude_self`: queries and keys are the same set and a point is not its own neighbour.
    """
    device = pick_device(device)
    if k > len(keys) - int(exclude_self):
        raise ValueError(f"k={k} needs more than {len(keys)} points")
    dist = torch.full((len(queries), k), math.inf, dtype=queries.dtype, device=device)
    index = torch.zeros((len(queries), k), dtype=torch.long, device=device)
    for i, j, q, key_rows in _blocks(queries, keys, _to_device, device):
        block = _squared_distances(q, key_rows)
        if exclude_self:
            rows = torch.arange(i, i + len(q), device=device)[:, None]
            cols = torch.arange(j, j + len(key_rows), device=device)[None, :]
            block = block.masked_fill(rows == cols, math.inf)
        merged = torch.cat([dist[i : i + len(q)], block], dim=1)
        merged_index = torch.cat([index[i : i + len(q)], torch.arange(j, j + len(key_rows), device=device).expand(len(q), -1)], dim=1)
        dist[i : i + len(q)], pick = merged.topk(k, dim=1, largest=False)
        index[i : i + len(q)] = merged_index.gather(1, pick)
    return dist.sqrt().cpu().numpy(), index.cpu().numpy()


def ball_counts(points: torch.Tensor, centers: torch.Tensor, radii: np.ndarray, device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For balls B(center_i, radius_i): how many balls hold each point, and how many points each ball holds."""
    device = pick_device(device)
    # A point on a ball's edge (a centre's own k-th neighbour) is inside, although its distance computed
    # again in another block may differ from the radius in the last bits.
    reach = torch.as_tensor(radii, dtype=points.dtype, device=device) * (1 + EDGE_TOLERANCE)
    per_point = torch.zeros(len(points), dtype=torch.long, device=device)
    per_center = torch.zeros(len(centers), dtype=torch.long, device=device)
    for i, j, p, c in _blocks(points, centers, _to_device, device):
        inside = _squared_distances(p, c).sqrt() <= reach[None, j : j + len(c)]
        per_point[i : i + len(p)] += inside.sum(1)
        per_center[j : j + len(c)] += inside.sum(0)
    return per_point.cpu().numpy(), per_center.cpu().numpy()


def frechet_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (rows), in float64.

    tr sqrt(S_a S_b) is computed as the trace of the square root of the symmetric matrix
    sqrt(S_a) S_b sqrt(S_a), whose eigenvalues are real and non-negative: stable even when the
    covariances are singular (fewer samples than dimensions).
    """
    a, b = torch.as_tensor(a, dtype=torch.float64).cpu(), torch.as_tensor(b, dtype=torch.float64).cpu()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 vectors per set")
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float((mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root).clamp_min(0))


def prdc(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int, device: torch.device | str | None = None) -> dict:
    """Improved precision and recall (Kynkäänniemi 2019) and density and coverage (Naeem 2020) with k neighbours.

    A point's ball reaches its k-th nearest neighbour in its own set. precision: fraction of fake
    points inside some real ball; recall: fraction of real points inside some fake ball; density:
    fake points inside real balls, counted with multiplicity, / (k * fakes), about 1 when the sets
    match; coverage: fraction of real balls holding a fake point. Distances in float64, so a point
    on a ball's edge counts the same in every pass.
    """
    real = torch.as_tensor(real, dtype=torch.float64)
    fake = torch.as_tensor(fake, dtype=torch.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k={k} needs more than {k} real and fake vectors (got {len(real)} and {len(fake)})")
    centre = real.mean(0)  # distances do not change; centring keeps the float error of |a|^2 + |b|^2 - 2ab small
    real, fake = real - centre, fake - centre
    real_radii = knn_distances(real, real, k, exclude_self=True, device=device)[0][:, -1]
    fake_radii = knn_distances(fake, fake, k, exclude_self=True, device=device)[0][:, -1]
    fake_in_real_balls, fakes_per_real_ball = ball_counts(fake, real, real_radii, device)
    real_in_fake_balls, _ = ball_counts(real, fake, fake_radii, device)
    return {
        "precision": float((fake_in_real_balls > 0).mean()),
        "recall": float((real_in_fake_balls > 0).mean()),
        "density": float(fake_in_real_balls.sum() / (k * len(fake))),
        "coverage": float((fakes_per_real_ball > 0).mean()),
    }


def paired_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the pixels of a[i] and b[i] (uint8 NHWC both), float32 (N,)."""
    if not len(a):
        return np.zeros(0, dtype=np.float32)
    rows_a, rows_b = unit_pixel_rows(a, torch.device("cpu")), unit_pixel_rows(b, torch.device("cpu"))
    return (rows_a * rows_b).sum(1).numpy()
