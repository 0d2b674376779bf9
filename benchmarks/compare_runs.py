"""Byte-identity of two reduced pipeline runs (benchmarks/reduced_pipeline.sh BEFORE, then AFTER a change):
    python benchmarks/compare_runs.py BEFORE AFTER"""
import hashlib
import json
import sys
from pathlib import Path

a, b = Path(sys.argv[1]), Path(sys.argv[2])
def tree(root, pattern):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern)) if p.is_file()}
for pat in ("quickstart/synthetic/*/*.png", "quickstart/variations/*/*.png", "quickstart/models/*/unet/*.safetensors", "quickstart/samples/*/*.png"):
    ta, tb = tree(a, pat), tree(b, pat)
    same = ta == tb
    print(f"{pat}: {len(ta)} files before, {len(tb)} after, identical bytes: {same}")
ma = (a / "quickstart/synthetic/metadata.csv").read_text().replace(str(a), "X"); mb = (b / "quickstart/synthetic/metadata.csv").read_text().replace(str(b), "X")
print("metadata.csv identical (run path masked):", ma == mb)
ca = (a / "quickstart/classes.json").read_bytes(); cb = (b / "quickstart/classes.json").read_bytes(); print("classes.json identical:", ca == cb)
ra = json.loads((a / "report/results.json").read_text()); rb = json.loads((b / "report/results.json").read_text())
keys = ("arm", "seed", "best_step", "val_acc", "val_auc", "test_acc", "test_auc")
rows = lambda r: [tuple(x[k] for k in keys) for x in r["rows"]]
print("results.json rows (arm, seed, best step, val/test ACC/AUC) identical:", rows(ra) == rows(rb), len(rows(ra)), "rows")
print("gains identical:", ra["gains"] == rb["gains"], "; best_baseline identical:", ra["best_baseline"] == rb["best_baseline"])
aa = json.loads((a / "quickstart/synthetic/audit.json").read_text()); ab = json.loads((b / "quickstart/synthetic/audit.json").read_text())
print("audit fidelity identical:", aa["fidelity"] == ab["fidelity"], "; memorization identical:", json.dumps(aa["memorization"]).replace(str(a), "X") == json.dumps(ab["memorization"]).replace(str(b), "X"))
