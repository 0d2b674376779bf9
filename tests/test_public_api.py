"""The public API (`import synthaug` alone): a user's own PyTorch loop over an evaluate arm, trained on the run's
real training images plus its synthetic folder, and scored on the real val and test splits that evaluate scores on."""

from __future__ import annotations

import json

import numpy as np
import torch

import synthaug


def as_batch(dataset) -> torch.Tensor:
    """A dataset's images as the classifier sees them (float (N, C, H, W) in [-1, 1])."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_a_users_own_loop_over_an_arm_scored_on_val_and_test_from_import_synthaug_alone(eval_run, tmp_path):
    run = eval_run("public", 8, synthetic=16, arms=["real", "real+synthetic"], ratios=[1], seeds=[0])
    results = synthaug.evaluate([run], tmp_path / "report", show_progress=False)

    real = synthaug.load_run_data(synthaug.open_run(run))  # the run's training images, val and test of its classes
    assert (len(real.val.labels), len(real.test.labels)) == (results["data"]["val"], results["data"]["test"])
    arm = synthaug.AddSynthetic(real.train, synthaug.SynthDataset(run / "synthetic"), 1.0, real_index=real.train_indices)
    row = next(r for r in results["rows"] if r["arm"] == "real+synthetic 1x")
    assert arm.n_synthetic == row["n_synthetic"]  # the very arm evaluate trained

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12 * 12, len(real.class_names)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    augment = lambda x, g: synthaug.classic_augment(x, synthaug.load_recipe(run / "recipe.yaml").evaluate.classic, g)  # noqa: E731
    for batch in synthaug.ArmBatches(arm, 8, seed=0, stream="real+synthetic 1x", steps=6, augment=augment):
        loss = batch.loss(model(batch.x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = {split: synthaug.classification_metrics(part.labels, torch.softmax(model(as_batch(synthaug.ArmDataset(part))), 1).numpy())
                  for split, part in (("val", real.val), ("test", real.test))}
    assert all(0 <= s["acc"] <= 1 and 0 <= s["bacc"] <= 1 and np.isfinite(s["auc"]) for s in scores.values())
    assert set(json.loads(json.dumps(scores["test"]))) >= {"acc", "auc", "bacc", "f1", "recall"}
