"""A study's generators on a lent GPU, every regime of every recipe at once (the step is launch-bound, so several fits
share one GPU well):

    python benchmarks/gpu_fits.py OUT_DIR DATA_ROOT RECIPE [--set FIELD=VALUE ...] [-- RECIPE [--set ...] ...]

Each recipe's `evaluate.regimes` are fitted as `synthaug experiment` names them (`<name>-<regime>`), so that an
experiment or sweep run later with `output_dir` pointing at the unpacked runs finds them finished. The run
directories (checkpoints left out) come back as OUT_DIR/runs.tar.part-?? in 15 MiB pieces:
`cat runs.tar.part-* | tar -xz -C ../study-runs`. GPU_FIT_LIMIT_S (default 300) bounds each fit; GPU_RUNS_DIR
(default: a new temporary folder) holds the runs on the machine; GPU_PACK_LIMIT_MB (default 58: the device tool
returns at most 64 MiB) stops packing before that size, and the runs left out are named, to be packed by another call
(`tar -czf - RUN ... --exclude=checkpoints | split -b 15M - $OUT/rest.part-` in GPU_RUNS_DIR).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from synthaug.recipe.recipe import load_recipe, recipe_to_yaml
from synthaug.study.experiment import regime_recipes

PIECE = 15 * 2**20


def main(argv: list[str]) -> int:
    out, data_root, *rest = argv
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(os.environ.get("GPU_RUNS_DIR") or tempfile.mkdtemp())
    runs.mkdir(parents=True, exist_ok=True)
    specs, spec = [], []
    for word in rest + ["--"]:
        if word == "--":
            specs.append(spec) if spec else None
            spec = []
        else:
            spec.append(word)
    jobs = []
    for path, *flags in specs:
        overrides = [flags[i + 1] for i in range(0, len(flags), 2) if flags[i] == "--set"]
        recipe = load_recipe(path, [*overrides, f"data.root={data_root}", f"output_dir={runs}"])
        for sub in regime_recipes(recipe):
            recipe_file = runs / f"{sub.name}.yaml"
            recipe_file.write_text(recipe_to_yaml(sub))
            log = open(out / f"fit-{sub.name}.log", "w")
            command = ["timeout", os.environ.get("GPU_FIT_LIMIT_S", "300"), sys.executable, "-m", "synthaug", "fit", str(recipe_file),
                       "--no-progress"]
            jobs.append((sub.name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
    finished = []
    for name, job in jobs:
        job.wait()
        lines = (out / f"fit-{name}.log").read_text().splitlines()
        print(name, "exit", job.returncode, "|", lines[-1] if lines else "")
        if list((runs / name / "models").glob("*/model_index.json")):
            finished.append(name)
    with open(out / "fits.log", "w") as merged:
        for name, _ in jobs:
            merged.write(f"## {name}\n" + (out / f"fit-{name}.log").read_text())
            (out / f"fit-{name}.log").unlink()
    limit = float(os.environ.get("GPU_PACK_LIMIT_MB", "58")) * 2**20
    size = lambda name: sum(p.stat().st_size for p in (runs / name).rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    packed, total = [], 0
    for name in finished:
        if total + size(name) > limit:
            break
        packed.append(name)
        total += size(name)
    archive = runs / "runs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in packed:
            tar.add(runs / name, arcname=name, filter=lambda info: None if "/checkpoints" in info.name else info)
    data = archive.read_bytes()
    for i in range(0, len(data), PIECE):
        (out / f"runs.tar.part-{i // PIECE:02d}").write_bytes(data[i:i + PIECE])
    print(f"{len(finished)} of {len(jobs)} runs finished in {runs}; {len(packed)} packed ({len(data) / 2**20:.1f} MiB) in {out}; "
          f"left to pack: {' '.join(finished[len(packed):]) or 'none'}")
    return 0 if len(finished) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
