"""The long-tailed study's generator lever (train.balanced_batches) paired over its 5 draws, from the reports' results.json:
    python benchmarks/lt_generator_lever.py   (after the two experiments in reports/bloodmnist-lt/notes.md)"""
import json, numpy as np, pandas as pd
from synthaug.evaluation.summary import paired_gain
rows = []
for f in ["reports/bloodmnist-lt/results.json", "../study-runs/report-lt-balanced-012/results.json", "../study-runs/report-lt-balanced-34/results.json"]:
    r = json.load(open(f))
    for row in r["rows"]:
        row["gen"] = "balanced" if "balanced_batches" in row["run"] else "default"
        rows.append(row)
t = pd.DataFrame(rows)
labels = np.asarray(json.load(open("reports/bloodmnist-lt/results.json"))["data"]["test_labels"])
top_b = t[(t.gen == "balanced") & (t.arm == "real+topup+balanced+classic")]
top_d = t[(t.gen == "default") & (t.arm == "real+topup+balanced+classic")]
base = t[(t.gen == "default") & (t.arm == "real+balanced+classic")]
for name, a, b in [("topup balanced-batch gen vs default gen", top_b, top_d), ("topup balanced-batch gen vs balanced sampling", top_b, base)]:
    for m in ("val_bacc", "test_bacc", "test_acc", "test_rare_recall"):
        g = paired_gain(a, b, m, labels if m == "test_acc" else None)
        print(name, m, f"{100*g['mean']:+.1f} [{100*g['lo']:+.1f}, {100*g['hi']:+.1f}] units {g['units']} {g['verdict']}")
print(top_b[["subset_seed", "test_bacc", "test_rare_recall"]].to_string())
