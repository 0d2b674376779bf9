"""Tabulate the study's lever sweeps (reports/bloodmnist/levers/<lever>-<setting>/results.json) into levers.md,
and pick each lever's setting on val: `python levers.py best guidance` prints the chosen setting.

A setting's score is the mean val ACC of its `real+synthetic 1x` arm over every (subset, seed) pair; test
numbers are shown beside it but never used for the choice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
ARM = "real+synthetic 1x"


def sweep(lever: str) -> list[dict]:
    """One entry per setting of `lever`: val and test of the lever's arm, and its gains."""
    out = []
    for folder in sorted((HERE / "levers").glob(f"{lever}-*")):
        results = json.loads((folder / "results.json").read_text())
        rows = pd.DataFrame(results["rows"])
        arm = "real+classic" if lever == "classic" else ARM
        mine = rows[rows["arm"] == arm]
        gains = {(g["vs"], bool(g.get("best_baseline"))): g for g in results["gains"] if g["arm"] == arm}
        out.append({
            "setting": folder.name[len(lever) + 1:], "pairs": len(mine),
            "val_acc": mine["val_acc"].mean(), "test_acc": mine["test_acc"].mean(),
            "vs_real": gains.get(("real", False)), "vs_best": next((g for (vs, b), g in gains.items() if b), None),
            "cas": [b.get("cas") for b in results.get("best_baseline", {}).values()],
        })
    return out


def best(lever: str) -> str:
    entries = sweep(lever)
    if not entries:
        raise SystemExit(f"no sweep of {lever} under {HERE / 'levers'}")
    return max(entries, key=lambda e: e["val_acc"])["setting"]


def _gain(g: dict | None) -> str:
    return "—" if not g else f"{g['dacc']:+.3f} [{g['dacc_lo']:+.3f}, {g['dacc_hi']:+.3f}]"


def table(levers: list[str]) -> str:
    lines = ["| lever | setting | pairs | val ACC (chooses) | test ACC | ΔACC vs real [95 % CI] | ΔACC vs best baseline [95 % CI] | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for lever in levers:
        entries = sweep(lever)
        if not entries:
            continue
        chosen = max(entries, key=lambda e: e["val_acc"])["setting"]
        for e in entries:
            lines.append(f"| {lever} | {e['setting']} | {e['pairs']} | {e['val_acc']:.3f} | {e['test_acc']:.3f} | {_gain(e['vs_real'])} | "
                         f"{_gain(e['vs_best'])} | {'**yes**' if e['setting'] == chosen else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "best":
        print(best(sys.argv[2]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "table":
        print(table(sys.argv[2:]), end="")
    else:
        raise SystemExit("usage: levers.py best LEVER | levers.py table LEVER [LEVER ...]")
