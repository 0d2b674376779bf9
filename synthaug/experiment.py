"""`synthaug experiment`: fit -> generate -> evaluate over every regime of a recipe."""

from __future__ import annotations

import math
from pathlib import Path

from synthaug.errors import UserError
from synthaug.evaluate import evaluate
from synthaug.generate import generate
from synthaug.config import SubsetConfig
from synthaug.recipe import Recipe, recipe_from_dict
from synthaug.regimes import expand_arms, top_ratio
from synthaug.train import fit

REPLACE_VARIATIONS = 5  # variations per real image that `experiment` makes for real+replace arms (DA-Fusion used 10)


def regime_recipe(recipe: Recipe, subset: SubsetConfig | None) -> Recipe:
    """The recipe of one regime: the same settings on that training subset, named `<name>-<regime>`."""
    if subset is None or (subset.fraction == 1.0):
        slug = "full"
    else:
        slug = (f"{subset.per_class}pc" if subset.per_class is not None else f"f{subset.fraction:g}") + f"-s{subset.seed}"
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-{slug}"
    raw["data"]["subset"] = subset.model_dump() if subset is not None else None
    return recipe_from_dict(raw, f"{recipe.name} regime {slug}")


def experiment(recipe: Recipe, out_dir: Path | None = None, force: bool = False, show_progress: bool = True,
               command: str | None = None) -> dict:
    """For every regime in `evaluate.regimes` (default: the recipe's own data.subset): fit its diffusion
    models on that subset only, generate as many synthetic images as the arms need, then evaluate all
    regimes together into `out_dir` (default reports/<name>)."""
    regimes = recipe.evaluate.regimes or [recipe.data.subset]
    arms = expand_arms(recipe.evaluate)
    ratio = top_ratio(arms)
    replaces = any(a.replace_p is not None for a in arms)
    if replaces and not recipe.generate.from_real:
        raise UserError("evaluate.arms: the real+replace arms need variations of the real images; set generate.from_real: true")
    runs = []
    for subset in regimes:
        sub = regime_recipe(recipe, subset)
        run = fit(sub, show_progress=show_progress)
        if replaces:  # every variation of an image serves the replace arms; the add arms use the first of each
            generate(sub, per_real=max(REPLACE_VARIATIONS, math.ceil(ratio)), show_progress=show_progress)
        elif ratio:
            generate(sub, ratio=ratio, show_progress=show_progress)  # R x each class's real count
        runs.append(run.root)
    return evaluate(runs, Path(out_dir or f"reports/{recipe.name}"), force=force, show_progress=show_progress, command=command)
