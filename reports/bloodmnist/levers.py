"""Tabulate the study's lever sweeps (<out>/levers/<lever>-<setting>/results.json) and pick each lever on val.

`python levers.py best OUT LEVER` prints the chosen setting; `python levers.py arm OUT LEVER` its best arm;
`python levers.py table OUT LEVER [...]` the markdown table. A setting's score is the mean **val** ACC, over every
(subset, seed) pair, of its best synthetic arm (for the `classic` lever: of `real+classic`); test numbers are shown
beside it but never used for a choice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

NOT_SYNTHETIC = ("real", "real+classic", "synthetic")


def sweep(out: Path, lever: str) -> list[dict]:
    """One entry per setting of `lever`: its scoring arm, val and test ACC, and its gains."""
    entries = []
    for folder in sorted((out / "levers").glob(f"{lever}-*")):
        if not (folder / "results.json").is_file():  # a sweep still running
            continue
        results = json.loads((folder / "results.json").read_text())
        rows = pd.DataFrame(results["rows"])
        val = rows.groupby("arm", sort=False)["val_acc"].mean()
        arms = ["real+classic"] if lever == "classic" else [a for a in val.index if a not in NOT_SYNTHETIC]
        arm = max(arms, key=lambda a: val[a])
        mine = rows[rows["arm"] == arm]
        gains = {(g["vs"], bool(g.get("best_baseline"))): g for g in results["gains"] if g["arm"] == arm}
        entries.append({
            "setting": folder.name[len(lever) + 1:], "arm": arm, "pairs": len(mine),
            "val_acc": float(mine["val_acc"].mean()), "test_acc": float(mine["test_acc"].mean()),
            "vs_real": gains.get(("real", False)), "vs_best": next((g for (vs, b), g in gains.items() if b), None),
        })
    return entries


def chosen(out: Path, lever: str) -> dict:
    entries = sweep(out, lever)
    if not entries:
        raise SystemExit(f"no sweep of {lever} under {out / 'levers'}")
    return max(entries, key=lambda e: e["val_acc"])  # ties: the first in name order


def _gain(g: dict | None) -> str:
    return "—" if not g else f"{g['dacc']:+.3f} [{g['dacc_lo']:+.3f}, {g['dacc_hi']:+.3f}]"


def table(out: Path, levers: list[str]) -> str:
    lines = ["| lever | setting | arm scored | pairs | val ACC (chooses) | test ACC | ΔACC vs real [95 % CI] | ΔACC vs best baseline [95 % CI] | chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lever in levers:
        entries = sweep(out, lever)
        if not entries:
            continue
        best = chosen(out, lever)["setting"]
        for e in entries:
            lines.append(f"| {lever} | {e['setting']} | {e['arm']} | {e['pairs']} | {e['val_acc']:.3f} | {e['test_acc']:.3f} | "
                         f"{_gain(e['vs_real'])} | {_gain(e['vs_best'])} | {'**yes**' if e['setting'] == best else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("best", "arm"):
        entry = chosen(Path(sys.argv[2]), sys.argv[3])
        print(entry["setting"] if sys.argv[1] == "best" else entry["arm"])
    elif len(sys.argv) >= 4 and sys.argv[1] == "table":
        print(table(Path(sys.argv[2]), sys.argv[3:]), end="")
    else:
        raise SystemExit("usage: levers.py best|arm OUT LEVER | levers.py table OUT LEVER [LEVER ...]")
