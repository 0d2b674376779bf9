"""What `fit` trains on: the labelled subset, the unlabeled pool, and one `Job` per model; the run directory's
recipe and classes.json that record them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from synthaug.data.images import ImageSet, load_split, resolve_classes
from synthaug.data.subsets import subset_indices
from synthaug.storage.pixels import to_model_tensor
from synthaug.core.errors import UserError
from synthaug.storage.files import atomic_write_text
from synthaug.data.pool import Pool, load_pool
from synthaug.recipe.recipe import Recipe, load_recipe, recipe_to_yaml
from synthaug.storage.rundir import POOL_CLASS, POOL_MODEL_DIR, ClassesInfo, RunDir, model_dir_name


@dataclass
class Job:
    """One model to train: a class (per_class), all classes (class_conditional) or the unlabeled pool (pretraining)."""

    model_dir: str
    class_idx: int  # -1 for the class-conditional model, POOL_CLASS for the pool's
    images: torch.Tensor  # float (N, C, H, W) in [-1, 1] on the training device
    labels: torch.Tensor | None  # class labels for the class-conditional model (the null class for the pool's)
    steps: int
    pool: torch.Tensor | None = None  # unlabeled images mixed into every batch with the null class (train.labelled_share)
    init_from: str | None = None  # the model dir whose finished weights this model starts from


def _comparable(recipe: Recipe) -> dict:
    """The parts of a recipe that decide a run's weights (paths may move)."""
    return recipe.model_dump(mode="json", include={"data", "model", "diffusion", "train"}, exclude={"data": {"root"}, "train": {"log_with"}})


def prepare_run(recipe: Recipe, is_main: bool) -> tuple[RunDir, ImageSet, list[int], Pool | None]:
    """Load and subset the data and the unlabeled pool, and write (or check) the run directory's recipe and classes.json."""
    run = RunDir(recipe.run_dir)
    classes = resolve_classes(recipe.data)
    train = load_split(recipe.data, "train")
    indices = subset_indices(train.labels, recipe.data.subset, classes, train.class_names, recipe.data.site)
    empty = [f"{c} ({train.class_names[c]})" for c in classes if not (train.labels[indices] == c).any()]
    if empty:  # found before any model trains, not after the others have
        raise UserError(f"data: class(es) {', '.join(empty)} have no training images; drop them with data.classes or add images")
    pool = load_pool(recipe.data, classes, indices, train)
    if run.recipe.is_file():
        previous = load_recipe(run.recipe)
        if _comparable(previous) != _comparable(recipe):
            raise UserError(
                f"{run.root}: holds a run made with a different recipe; give this one another name (--set name=...) "
                f"or delete {run.root}"
            )
    if is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.recipe, recipe_to_yaml(recipe))
        subset = train.take(indices)
        subset_counts = subset.counts()
        run.write_classes(ClassesInfo(
            class_names=train.class_names,
            classes=classes,
            conditioning=recipe.model.conditioning,
            models={c: model_dir_name(recipe.model.conditioning, c, train.class_names[c]) for c in classes},
            channels=train.channels,
            size=recipe.data.size,
            counts={c: subset_counts[c] for c in classes},
            split_counts={c: train.counts()[c] for c in classes},
            subset=recipe.data.subset.record() if recipe.data.subset else None,
            train_indices=indices.tolist(),
            unlabeled=pool.record if pool is not None else None,
        ))
    return run, train.take(indices), classes, pool


def make_jobs(recipe: Recipe, data: ImageSet, classes: list[int], pool: Pool | None, device) -> list[Job]:
    """The models of a run in training order: the pool's first when train.pretrain_steps asks for one."""
    images = to_model_tensor(data.images, device)
    conditional = recipe.model.conditioning == "class_conditional"
    steps, null = recipe.train.steps, len(data.class_names)
    pretrain = pool is not None and recipe.train.pretrain_steps > 0
    mixes = pool is not None and conditional and recipe.train.labelled_share < 1
    pool_images = to_model_tensor(pool.images, device) if pretrain or mixes else None  # only when a model uses it
    jobs, init_from = [], None
    if pretrain:
        null_labels = torch.full((len(pool_images),), null, dtype=torch.int64, device=device) if conditional else None
        jobs.append(Job(POOL_MODEL_DIR, POOL_CLASS, pool_images, null_labels, recipe.train.pretrain_steps))
        init_from = POOL_MODEL_DIR
    if conditional:
        labels = torch.from_numpy(data.labels).to(device)
        return jobs + [Job(model_dir_name("class_conditional"), -1, images, labels, steps, pool_images if mixes else None, init_from)]
    return jobs + [
        Job(model_dir_name("per_class", c, data.class_names[c]), c, images[torch.from_numpy(data.labels == c).to(device)], None, steps,
            None, init_from)
        for c in classes
    ]


