"""The run directory and the synthetic folder: the contract between stages, laid out here and nowhere else.

    <output_dir>/<name>/
      recipe.yaml                 the resolved recipe the run was made with
      classes.json                class names, real counts, subset spec and the chosen train indices (`ClassesInfo`)
      metrics.csv                 step, class, loss, lr, images_per_s (appended as training goes)
      summary.json                versions, device, wall time, images/s per class (rewritten per class)
      models/<model_dir>/         EMA UNet + DDPMScheduler as a diffusers DDPMPipeline (safetensors);
                                  per_class: one per class (`<idx>_<name>`), class_conditional: `all`
      checkpoints/<model_dir>/step_<N>/   accelerate `save_state` (model, optimizer, lr, EMA); last good one kept
      samples/<model_dir>/step_<N>.png    sample grids during and after training
      synthetic/                  default output of `synthaug generate` (a `SynthDir`)
      audit/features.pt           cache of the classifier trained on the run's real images (audit, --filter-confidence)

    <synthetic folder>/
      <class folder>/<class_idx>_<i:06d>.png    images; each PNG's text chunk holds its provenance
      metadata.csv, manifest.json               written by generate (manifest first, metadata last)
      audit.json, audit.md, audit_*.png         written by audit

Every file is written under a temporary name and renamed (`files`), so a crash never leaves half a file;
a finished model directory appears in one rename.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from synthaug.core.errors import UserError
from synthaug.storage.files import atomic_write_json, read_json
from synthaug.recipe.recipe import Recipe, load_recipe

CONDITIONAL_MODEL_DIR = "all"
CHECKPOINT = re.compile(r"^step_(\d+)$")


def safe_name(name: str) -> str:
    """A class name made safe as one path component: no separators, no '..', no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_").lstrip(".")
    return cleaned or "class"


# data.unlabeled with train.pretrain_steps: the model trained on the pool alone, which the others start from.
POOL_MODEL_DIR = "pool"
POOL_CLASS = -2


def model_dir_name(conditioning: str, class_idx: int | None = None, class_name: str | None = None) -> str:
    if conditioning == "class_conditional":
        return CONDITIONAL_MODEL_DIR
    return f"{class_idx:02d}_{safe_name(class_name)}"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint folder `step_<N>`, None for anything else."""
    match = CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ClassesInfo:
    """classes.json: what `fit` trained on. Class keys are ints here and strings on disk."""

    class_names: list[str]
    classes: list[int]
    conditioning: str
    models: dict[int, str]  # class -> model_dir
    channels: int
    size: int
    counts: dict[int, int]  # real training images per class in the run's subset
    split_counts: dict[int, int]  # the whole training split
    subset: dict | None
    train_indices: list[int]  # into the real train split: every labelled real image the generator saw
    unlabeled: dict | None = None  # data.unlabeled's pool: source, count and split indices or files (synthaug.pool)

    def to_json(self) -> dict:
        raw = asdict(self)
        for key in ("models", "counts", "split_counts"):
            raw[key] = {str(c): v for c, v in raw[key].items()}
        return raw

    @classmethod
    def from_json(cls, raw: dict, path: Path) -> "ClassesInfo":
        try:
            return cls(
                class_names=[str(n) for n in raw["class_names"]],
                classes=[int(c) for c in raw["classes"]],
                conditioning=str(raw["conditioning"]),
                models={int(c): str(m) for c, m in raw["models"].items()},
                channels=int(raw["channels"]),
                size=int(raw["size"]),
                counts={int(c): int(n) for c, n in raw["counts"].items()},
                split_counts={int(c): int(n) for c, n in raw["split_counts"].items()},
                subset=raw["subset"],
                train_indices=[int(i) for i in raw["train_indices"]],
                unlabeled=raw.get("unlabeled"),  # runs made before data.unlabeled have none
            )
        except KeyError as exc:
            raise UserError(f"{path}: incomplete classes.json (no {exc.args[0]!r}); rerun `synthaug fit` on the recipe") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path}: damaged classes.json ({type(exc).__name__}); rerun `synthaug fit` on the recipe") from None


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def features(self) -> Path:
        return self.root / "audit" / "features.pt"

    def model(self, model_dir: str) -> Path:
        return self.root / "models" / model_dir

    def checkpoints(self, model_dir: str) -> Path:
        return self.root / "checkpoints" / model_dir

    def checkpoint(self, model_dir: str, step: int) -> Path:
        return self.checkpoints(model_dir) / checkpoint_name(step)

    def samples(self, model_dir: str) -> Path:
        return self.root / "samples" / model_dir

    def sample_grid(self, model_dir: str, step: int) -> Path:
        return self.samples(model_dir) / f"{checkpoint_name(step)}.png"

    def is_finished(self, model_dir: str) -> bool:
        return (self.model(model_dir) / "model_index.json").is_file()

    def is_complete(self) -> bool:
        """Every model of classes.json saved: the run's fit finished."""
        try:
            models = self.read_classes().models.values()
        except UserError:
            return False
        return all(self.is_finished(model_dir) for model_dir in models)

    def latest_checkpoint(self, model_dir: str) -> Path | None:
        """The newest `step_<N>` folder; anything else in checkpoints/ is not a checkpoint and is ignored."""
        folder = self.checkpoints(model_dir)
        found = [(checkpoint_step(p), p) for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        found = sorted((step, p) for step, p in found if step is not None)
        return found[-1][1] if found else None

    def read_classes(self) -> ClassesInfo:
        try:
            raw = read_json(self.classes, "classes.json")
        except FileNotFoundError:
            raise UserError(f"{self.root}: not a synthaug run (no classes.json); run `synthaug fit` first") from None
        return ClassesInfo.from_json(raw, self.classes)

    def write_classes(self, info: ClassesInfo) -> None:
        atomic_write_json(self.classes, info.to_json())

    def read_summary(self) -> dict:
        """summary.json, or {} before the first model finished."""
        try:
            return read_json(self.summary, "summary.json")
        except FileNotFoundError:
            return {}


@dataclass(frozen=True)
class SynthDir:
    """A synthetic folder written by `synthaug generate`."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.csv"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def audit_json(self) -> Path:
        return self.root / "audit.json"

    @property
    def audit_md(self) -> Path:
        return self.root / "audit.md"

    def read_manifest(self) -> dict | None:
        """manifest.json, None when the folder has none; a damaged one is a one-line error."""
        try:
            return read_json(self.manifest, "manifest.json")
        except FileNotFoundError:
            return None

    def made_by(self) -> str | None:
        """The run directory the set was generated from, per its manifest."""
        return (self.read_manifest() or {}).get("run")


@dataclass(frozen=True)
class Run:
    """A run as every stage receives it: its directory, its validated recipe and its classes.json."""

    dir: RunDir
    recipe: Recipe
    info: ClassesInfo

    @property
    def root(self) -> Path:
        return self.dir.root


def default_run(root: Path = Path("runs")) -> RunDir:
    """The run used when none is given: the only finished run under `root` (every model of its classes.json saved),
    printed. Several finished runs, or none, are refused in one line naming them (newest first): never a guess."""
    runs = sorted((RunDir(p.parent) for p in root.glob("*/classes.json")), key=lambda r: r.classes.stat().st_mtime, reverse=True)
    if not runs:
        raise UserError(f"--run: no run under {root}/ (train one with `synthaug fit RECIPE`, or give --run DIR)")
    finished = [run for run in runs if run.is_complete()]

    def named(found: list[RunDir]) -> str:
        return ", ".join(str(run.root) for run in found[:3]) + (", ..." if len(found) > 3 else "")

    if len(finished) > 1:
        raise UserError(f"--run: {len(finished)} finished runs under {root}/ ({named(finished)}); give one with --run DIR")
    if not finished:
        raise UserError(f"--run: no finished run under {root}/ ({named(runs)} not finished); finish `synthaug fit` on one, or give --run DIR")
    print(f"{finished[0].root}: the only finished run under {root}/, used as --run", flush=True)
    return finished[0]


def open_run(run: "Run | Recipe | RunDir | str | Path | None" = None, overrides: list[str] | None = None) -> Run:
    """A run given as a Run, a Recipe, a RunDir or a folder (default: `default_run`, the only finished run under runs/), with its
    recipe (`overrides`: `--set` pairs applied to the recipe.yaml of a folder) and its classes.json."""
    if isinstance(run, Run) and not overrides:
        return run
    if isinstance(run, Run):
        run = run.dir
    if isinstance(run, Recipe):
        run_dir = RunDir(run.run_dir)
        return Run(run_dir, run, run_dir.read_classes())
    run_dir = run if isinstance(run, RunDir) else default_run() if run is None else RunDir(Path(run))
    if not run_dir.root.is_dir():
        raise UserError(f"--run {run_dir.root}: no such directory")
    inside = sorted(p.parent for p in run_dir.root.glob("*/classes.json")) if not run_dir.classes.is_file() else []
    if inside:  # given the output_dir instead of the run in it
        names = " or ".join(f"--run {p}" for p in inside[:3])
        raise UserError(f"{run_dir.root} holds the run{'s' if len(inside) > 1 else ''} {', '.join(str(p) for p in inside[:3])}; pass {names}")
    info = run_dir.read_classes()
    if not run_dir.recipe.is_file():
        raise UserError(f"{run_dir.root}: not a synthaug run (no recipe.yaml); run `synthaug fit` first")
    return Run(run_dir, load_recipe(run_dir.recipe, overrides), info)
