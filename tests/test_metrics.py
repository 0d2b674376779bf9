"""synthaug.metrics: Fréchet distance, precision/recall/density/coverage and the chunked nearest-image searches,
against answers known in closed form or computed densely."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blob_images

import synthaug.reference.metrics as metrics_module
from synthaug.classifier.harness import extract_features
from synthaug.reference.metrics import frechet_distance, knn_distances, nearest_by_correlation, prdc
from synthaug.classifier.networks import SmallCNN


def test_frechet_distance_is_zero_on_itself_and_matches_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    shifted = rng.normal(size=(20000, 4)) + np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(a, shifted) == pytest.approx(5.0, rel=0.03)  # |mean difference|^2, same covariance
    wider = rng.normal(size=(20000, 4)) * 2.0
    assert frechet_distance(a, wider) == pytest.approx(4 * (1 + 4 - 2 * 2), rel=0.05)  # tr(1 + 4 - 2*sqrt(4)) per dim


def test_frechet_distance_of_image_features_grows_with_noise():
    torch.manual_seed(0)
    net = SmallCNN(1, 2, width=8).eval()
    images = np.concatenate([blob_images(64, c, seed=3) for c in (0, 1)])
    feats = extract_features(net, images, torch.device("cpu"))
    rng = np.random.default_rng(1)
    distances = []
    for sigma in (5, 20, 60):
        noisy = np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)
        distances.append(frechet_distance(feats, extract_features(net, noisy, torch.device("cpu"))))
    assert frechet_distance(feats, feats) == pytest.approx(0, abs=1e-6)
    assert 0 < distances[0] < distances[1] < distances[2]


def test_prdc_known_answers():
    rng = np.random.default_rng(0)
    k = 5
    real = rng.normal(size=(300, 8))
    # The same set: every real ball holds its centre and its k neighbours, so density is (k + 1) / k.
    assert prdc(real, real, k) == pytest.approx({"precision": 1, "recall": 1, "density": (k + 1) / k, "coverage": 1})
    # Two far clusters; the fake set is one of them: faithful (precision 1) but half the diversity.
    left, right = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 100
    half = prdc(np.concatenate([left, right]), left, k)
    assert half["precision"] == 1 and half["recall"] == 0.5 and half["coverage"] == 0.5
    # Disjoint: nothing.
    assert prdc(left, right, k) == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}
    # Half the fake points are far outliers: precision halves; the other half still lands in nearly every real ball.
    outliers = prdc(real, np.concatenate([real[:150], rng.normal(size=(150, 8)) + 100]), k)
    assert outliers["precision"] == 0.5 and outliers["coverage"] > 0.9
    with pytest.raises(ValueError, match="k=5"):
        prdc(real[:5], real, k)


def test_chunked_searches_match_dense_answers(monkeypatch):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 256, (70, 6, 6, 1), dtype=np.uint8)
    queries = np.concatenate([keys[[3, 40]], keys[[9]][:, :, ::-1], rng.integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)])
    monkeypatch.setattr(metrics_module, "CHUNK_ELEMENTS", 36 * 8)  # 8 rows per chunk: many blocks
    found = nearest_by_correlation(queries, keys, mirror=True)

    def flat(x: np.ndarray) -> np.ndarray:  # rows centred and scaled to unit length: dot products are correlations
        rows = x.reshape(len(x), -1)
        rows = rows - rows.mean(1, keepdims=True)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    dense = np.maximum(flat(queries.astype(float)) @ flat(keys.astype(float)).T, flat(queries[:, :, ::-1].astype(float)) @ flat(keys.astype(float)).T)
    np.testing.assert_allclose(found.correlation, dense.max(1), atol=1e-5)
    assert found.index[:3].tolist() == [3, 40, 9] and found.mirrored[:3].tolist() == [False, False, True]
    points = torch.tensor(rng.normal(size=(250, 3)))  # 96 rows per chunk: query and key blocks, the diagonal across them
    dist, idx = knn_distances(points, points, 2, exclude_self=True)
    nearest = torch.cdist(points, points).fill_diagonal_(float("inf")).topk(2, largest=False)
    np.testing.assert_allclose(dist, nearest.values.numpy(), atol=1e-9)
    np.testing.assert_array_equal(idx, nearest.indices.numpy())
