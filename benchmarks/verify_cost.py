"""What reading a synthetic set with verification costs: SynthDataset's construction (reads metadata.csv, checks every
row and that every file exists) and verify() (decodes every PNG and checks its provenance against its row).

Builds a folder of N 28x28 RGB PNGs laid out and stamped as `synthaug generate` writes them (random pixels), then
times both. Run alone on the machine:  OMP_NUM_THREADS=1 python benchmarks/verify_cost.py --images 45000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from synthaug import SynthDataset
from synthaug.storage.synthset import provenance_png


def build(folder: Path, n: int, classes: int = 8) -> None:
    rng = np.random.default_rng(0)
    rows = []
    per_class = n // classes
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            name = f"class{c}/{c}_{i:06d}.png"
            pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
            record = {"generation_id": "bench", "class": c, "index": i, "attempt": 0}
            (folder / name).write_bytes(provenance_png(pixels, record))
            rows.append({"file_name": name, "label": c, "class_name": f"class{c}", "index": i})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    counts = {str(c): {"count": per_class} for c in range(classes)}
    (folder / "manifest.json").write_text(json.dumps({"complete": True, "generation_id": "bench", "classes": counts,
                                                       "class_names": [f"class{c}" for c in range(classes)]}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=45000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        began = time.perf_counter()
        build(folder, args.images)
        print(f"built {args.images} PNGs in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        data = SynthDataset(folder)
        opened = time.perf_counter() - began
        began = time.perf_counter()
        data.verify()
        verified = time.perf_counter() - began
        print(f"SynthDataset({len(data)} images): {opened:.2f} s to open (rows and files checked), "
              f"{verified:.2f} s to verify() (every PNG decoded, provenance checked): {1e6 * verified / len(data):.0f} us per image")


if __name__ == "__main__":
    main()
