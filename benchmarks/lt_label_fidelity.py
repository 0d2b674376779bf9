"""Label fidelity and copy rate per class of the long-tailed study's top-up sets, from their audit.json files (made by
`synthaug audit --run RUN --synthetic SET --set audit.judge_sampling=balanced`, see reports/bloodmnist-lt/notes.md):

    python benchmarks/lt_label_fidelity.py ../study-runs bloodmnist-lt-balanced_batches-True-lt60h600 0 1 2 3 4

The judge of each draw is trained on that draw alone (class-balanced batches, selected on val); its own-class share
on real val images of a class is the reference a synthetic set can reach. Means over the draws.
"""
import json
import sys
from pathlib import Path

import pandas as pd

SETS = {"synthetic": "drawn from noise", "synthetic-4a7fce03ce": "variations, strength 0.6 (chosen)"}


def main(root: str, run_prefix: str, *seeds: str) -> None:
    rows = []
    for seed in seeds:
        for folder, name in SETS.items():
            audit = Path(root) / f"{run_prefix}-s{seed}" / folder / "audit.json"
            if not audit.is_file():
                print(f"{audit}: not audited yet")
                continue
            report = json.loads(audit.read_text())
            copies = report["memorization"]["per_class"]
            for cls, entry in report["label_fidelity"]["per_class"].items():
                rows.append({"set": name, "class": cls[:14], "draw": seed, "own class": entry["own_class_fraction"],
                             "real val": entry["real_val_own_class_fraction"],
                             "copy rate": (copies.get(cls) or {}).get("flagged_fraction")})
    table = pd.DataFrame(rows)
    print(table.groupby(["class", "set"], sort=False)[["own class", "real val", "copy rate"]].mean().round(3).to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
