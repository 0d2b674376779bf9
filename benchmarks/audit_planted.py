"""Does the audit's copy check work on real images? Plant copies of a run's training images among real ones.

    python benchmarks/audit_planted.py RUN OUT [--per-class 100]

Writes a synthetic-set folder OUT holding, per class, `--per-class` real val images (new patients:
they should be flagged about as often as 1 - audit.copy_quantile), 5 exact copies of the run's
training images, and 5 copies each with Gaussian pixel noise of sigma 5 and 10 grey levels (and 5
mirrored copies when the run trained with flips); runs `synthaug.auditing.audit.audit` on it and prints how
many of each kind were flagged. The val images are also the audit's out-of-sample check, so their
line restates that number on this draw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from synthaug.auditing.audit import audit
from synthaug.reference.realdata import load_run_data
from synthaug.storage.rundir import open_run, safe_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    data = load_run_data(open_run(args.run))
    out = Path(args.out)
    rng = np.random.default_rng(0)
    rows = []

    def put(image: np.ndarray, label: int, kind: str) -> None:
        name = f"{safe_name(data.class_names[label])}/{label}_{len(rows):06d}.png"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(out / name)
        rows.append({"file_name": name, "label": label, "class_name": data.class_names[label], "kind": kind})

    def noised(image: np.ndarray, sigma: float) -> np.ndarray:
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)

    for c in data.classes:
        train = data.train.images[data.train.labels == c]
        for image in data.val.images[data.val.labels == c][: args.per_class]:
            put(image, c, "real val image")
        planted = [("exact copy", lambda x: x), ("copy + noise sigma 5", lambda x: noised(x, 5)), ("copy + noise sigma 10", lambda x: noised(x, 10))]
        if data.mirror:
            planted.append(("mirrored copy", lambda x: x[:, ::-1]))
        for n, (kind, make) in enumerate(planted):
            for image in train[5 * n : 5 * n + 5]:
                put(make(image), c, kind)
    pd.DataFrame(rows).to_csv(out / "metadata.csv", index=False)
    report = audit(args.run, out, show_progress=False)
    flagged = {f["file"] for f in report["memorization"]["flagged"]}
    table = pd.DataFrame(rows).assign(flagged=lambda t: t["file_name"].isin(flagged))
    print(table.groupby("kind", sort=False)["flagged"].agg(["size", "sum"]).rename(columns={"size": "images", "sum": "flagged"}).to_string())


if __name__ == "__main__":
    main()
