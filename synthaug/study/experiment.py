"""`synthaug experiment`: fit -> generate -> evaluate over every regime of a recipe."""

from __future__ import annotations

import functools
import math
import os
import shutil
from pathlib import Path

from synthaug.core.errors import UserError
from synthaug.evaluation.evaluate import check_one_process, evaluate
from synthaug.generation.generate import generate
from synthaug.recipe.sections import SubsetConfig
from synthaug.generation.plan import class_targets, resolve_settings
from synthaug.recipe.recipe import Recipe, recipe_from_dict
from synthaug.evaluation.regimes import expand_arms, top_ratio
from synthaug.storage.rundir import SynthDir, open_run
from synthaug.core.runtime import pick_device
from synthaug.data.images import load_split
from synthaug.study.estimate import estimate_line
from synthaug.storage.synthset import model_sha256
from synthaug.diffusion.jobs import prepare_run
from synthaug.diffusion.training import fit


def regime_recipe(recipe: Recipe, subset: SubsetConfig | None, unit: int = 0) -> Recipe:
    """The recipe of one regime: the same settings on that training subset, named `<name>-<regime>`. `unit` k > 0 (an
    `evaluate.resample` unit) shifts the generator's, the sampler's and the classifiers' seeds, so that no two units
    share a seed: units that share images must not also share the noise of their seeds."""
    slug = "full" if subset is None or subset.fraction == 1.0 else subset.slug()
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-{slug}"
    raw["data"]["subset"] = subset.model_dump() if subset is not None else None
    if unit:
        seeds = raw["evaluate"]["seeds"]
        raw["train"]["seed"] += unit
        raw["generate"]["seed"] += unit
        raw["evaluate"]["seeds"] = [s + unit * (max(seeds) - min(seeds) + 1) for s in seeds]
    return recipe_from_dict(raw, f"{recipe.name} regime {slug}")


def regime_recipes(recipe: Recipe) -> list[Recipe]:
    """The recipe of every regime in `evaluate.regimes` (default: the recipe's own data.subset), or of every unit of
    `evaluate.resample`: unit k a `fraction` of each class drawn with subset seed `seed` + k."""
    resample = recipe.evaluate.resample
    if resample is not None:
        return [regime_recipe(recipe, SubsetConfig(fraction=resample.fraction, seed=resample.seed + k), unit=k)
                for k in range(resample.units)]
    return [regime_recipe(recipe, subset) for subset in recipe.evaluate.regimes or [recipe.data.subset]]


def synthetic_amount(recipe: Recipe) -> dict:
    """What `generate` must draw for the recipe's arms: {"per_real": K}, {"ratio": R}, {"balance": True} or
    {"balance": N} (the top-up arms), or {} when no arm uses synthetic images."""
    if recipe.evaluate.release is not None:  # another site's release is the synthetic set: nothing to fit or draw here
        return {}
    arms = expand_arms(recipe.evaluate)
    ratio = top_ratio(arms)
    topup = any(a.topup for a in arms)
    if topup and (ratio or any(a.replace_p is not None for a in arms)):
        raise UserError("evaluate.arms: the real+topup arms need a set drawn to a per-class target and the other synthetic "
                        "arms one drawn per real image; evaluate them in separate experiments")
    if topup:  # what the arm takes: up to the largest class, or up to N (N - n_c of class c, none past N)
        return {"balance": True if recipe.evaluate.top_up == "balance" else recipe.evaluate.top_up}
    if any(a.replace_p is not None for a in arms):
        if not recipe.generate.from_real:
            raise UserError("evaluate.arms: the real+replace arms need variations of the real images; set generate.from_real: true")
        # every variation serves the replace arms (DA-Fusion drew 10 per image), the add arms the first of each
        return {"per_real": max(recipe.evaluate.replace_variations, math.ceil(ratio))}
    return {"ratio": ratio} if ratio else {}  # R x each class's real count


def drawn_alike(recipe: Recipe, folder: str, serves) -> Path | None:
    """A set already in the recipe's run that `serves` (a `set_server` test) under another name than `folder`; else None."""
    return next((d for d in sorted(recipe.run_dir.iterdir()) if d.is_dir() and d.name != folder and serves(d)), None)


def set_server(recipe: Recipe, amount: dict):
    """`serves(folder, more=False)`: whether a folder holds a complete PNG set that serves the arms: drawn on this kind of device from the
    run's present models with the recipe's generate settings, with `amount` of each class. A top-up (`balance`) is
    also served by a set with more of a class: image i of class c depends on (seed, c, i) alone, and the arm takes
    the first ones, so a set drawn to 200 of every class holds exactly the top-up to 200 as its first images.
    `more`: only such a larger set serves. The run's models are hashed once, whatever the number of folders tested."""
    run = open_run(recipe)
    wanted = resolve_settings(recipe.generate, recipe.diffusion.num_train_timesteps).as_recorded()
    counts = {str(t.class_idx): t.count for t in class_targets(run, amount.get("per_class"), amount.get("ratio"), amount.get("balance", False),
                                                               None, amount.get("per_real"))}
    at_least = bool(amount.get("balance"))
    weights_sha256 = functools.cache(lambda model_dir: model_sha256(run.dir, model_dir))  # each model read once, not once per set

    def serves(folder: Path, more: bool = False) -> bool:
        drawn = SynthDir(folder)
        try:
            manifest = drawn.read_manifest() or {}
            provenance = manifest.get("provenance", {})
            same_models = provenance.get("model_sha256") == {m: weights_sha256(m) for m in provenance.get("model_sha256", {})}
        except UserError:  # a damaged manifest or a model gone: not a set to reuse
            return False
        have = {c: e.get("count") for c, e in manifest.get("classes", {}).items()}
        if at_least:
            enough = all(have.get(c, 0) >= n for c, n in counts.items() if n)
        else:
            enough = have == counts
        if more:
            enough = enough and have != counts
        return bool(manifest.get("complete") and manifest.get("format") == "png" and manifest.get("recipe", {}).get("generate") == wanted
                    and enough and provenance.get("device") == pick_device().type and same_models)
    return serves


def link_set(source: Path, dest: Path) -> None:
    """`dest` as a copy of the set in `source`, its images hard-linked (copied where the file system cannot link)."""
    tmp = dest.with_name(f".{dest.name}.linking")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("audit*", ".*"))
    tmp.rename(dest)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def experiment(recipe: Recipe, out_dir: Path | None = None, force: bool = False, show_progress: bool = True,
               command: str | None = None, cache_dir: Path | None = None, synthetic_folder: str = "synthetic",
               wait: bool = False, arm_names: list[str] | None = None, val_only: bool = False) -> dict:
    """For every regime in `evaluate.regimes` (default: the recipe's own data.subset): fit its diffusion
    models on that subset only, generate as many synthetic images as the arms need into `<run>/<synthetic_folder>`,
    then evaluate all regimes together into `out_dir` (default reports/<name>; finished arms cached in `cache_dir`).
    A set already in the run drawn with the same settings and amount (by `generate --out`) is linked, not drawn again.
    `wait`: queue behind another process holding a run directory, synthetic folder or `out_dir` instead of refusing.
    `arm_names`, `val_only`: as evaluate's (a sweep's confirmation and lever tries). One process: refused under a several-process `accelerate launch`, before any work."""
    check_one_process("experiment")
    amount = synthetic_amount(recipe)
    for split in ("val", "test"):  # evaluate needs them: refuse now, not after hours of fitting
        load_split(recipe.data, split)
    units = regime_recipes(recipe)
    print(estimate_line(units, amount, pick_device()), flush=True)
    runs = []
    for sub in units:
        # arms of real images alone need the run's subset (recipe.yaml, classes.json), not its generators
        run = fit(sub, show_progress=show_progress, wait=wait) if amount else prepare_run(sub, is_main=True)[0]
        if amount:
            out = run.root / synthetic_folder
            serves = set_server(sub, amount)
            alike = None if out.exists() else drawn_alike(sub, synthetic_folder, serves)
            if alike is not None:
                print(f"{out}: the images of {alike.name} (drawn with the same settings), linked", flush=True)
                link_set(alike, out)
            if serves(out, more=True):  # generate would rewrite it to the smaller counts
                print(f"{out}: holds the top-up's images as the first of each class (drawn to more), kept", flush=True)
            else:
                generate(sub, out=out, **amount, show_progress=show_progress, wait=wait)
        runs.append(run.root)
    return evaluate(runs, Path(out_dir or f"reports/{recipe.name}"), [run / synthetic_folder for run in runs], force=force,
                    show_progress=show_progress, command=command, cache_dir=cache_dir, wait=wait, arm_names=arm_names,
                    val_only=val_only)
