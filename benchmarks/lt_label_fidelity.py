"""Label fidelity and copy rate per class of the long-tailed study's top-up sets, from their audit.json files (made by
`synthaug audit --run RUN --synthetic SET --set audit.judge_sampling=balanced`, see reports/bloodmnist-lt/notes.md):

    python benchmarks/lt_label_fidelity.py ../study-runs bloodmnist-lt-balanced_batches-True-lt60h600 0 1 2 3 4
    python benchmarks/lt_label_fidelity.py ../study-runs bloodmnist-lt2-lt60h600 0 1 2 3 4 \
        --sets synthetic-4a7fce03ce synthetic-1464a1ff80 synthetic-c067ecfd47 synthetic-b257dbfd01   # round 2

Each set is named by its manifest (how it was drawn); round 1's two sets are the default. For translations, "own
class" is the class each image was drawn as (the rare target), not the head class its source image came from.

The judge of each draw is trained on that draw alone (class-balanced batches, selected on val); its own-class share
on real val images of a class is the reference a synthetic set can reach. Means over the draws.
"""
import argparse
import json
from pathlib import Path

import pandas as pd

SETS = ("synthetic", "synthetic-4a7fce03ce")  # round 1: drawn from noise; variations at strength 0.6 (chosen)


def set_name(folder: Path) -> str:
    """How a set was drawn, from its manifest: noise, variations or translations, with their strength."""
    drawn = json.loads((folder / "manifest.json").read_text())["provenance"]
    mode, strength = drawn.get("mode", "noise"), drawn.get("strength")
    at = f" s {strength[0]:g}" if strength else ""
    if mode == "translate":
        return f"translations from {drawn.get('translate_from')} classes{at}"
    return "variations" + at if mode == "from_real" else "drawn from noise"


def main(root: str, run_prefix: str, seeds: list[str], sets: list[str]) -> None:
    rows = []
    for seed in seeds:
        for folder in sets:
            audit = Path(root) / f"{run_prefix}-s{seed}" / folder / "audit.json"
            if not audit.is_file():
                print(f"{audit}: not audited yet")
                continue
            name = set_name(audit.parent)
            report = json.loads(audit.read_text())
            copies = report["memorization"]["per_class"]
            for cls, entry in report["label_fidelity"]["per_class"].items():
                rows.append({"set": name, "class": cls[:14], "draw": seed, "own class": entry["own_class_fraction"],
                             "real val": entry["real_val_own_class_fraction"],
                             "copy rate": (copies.get(cls) or {}).get("flagged_fraction")})
    table = pd.DataFrame(rows)
    print(table.groupby(["class", "set"], sort=False)[["own class", "real val", "copy rate"]].mean().round(3).to_string())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="label fidelity and copy rate per class of audited top-up sets")
    parser.add_argument("root")
    parser.add_argument("run_prefix")
    parser.add_argument("seeds", nargs="+")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    args = parser.parse_args()
    main(args.root, args.run_prefix, args.seeds, args.sets)
