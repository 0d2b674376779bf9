"""synthaug: grow small labelled medical image sets with diffusion models, and measure whether it helps.

The public API (each name is imported on first use, so that `import synthaug` does not load torch):

- `load_recipe(path, overrides)`, `open_run(run)`: a validated recipe, an opened run directory;
- `fit(recipe)`, `generate(run, ...)`, `evaluate(runs, ...)`, `audit(run, ...)`, `experiment(recipe)`, `sweep(recipe)`:
  the stages of the `synthaug` command, same names and options;
- `SynthDataset`, `mix_real_synthetic`: a synthetic folder as a PyTorch dataset, and mixed with real data;
- `ArmDataset`, `AddSynthetic`, `SyntheticOnly`, `TopUp`, `ReplaceWithVariations`, `ArmBatches`: evaluate's arms as
  datasets and their batches, for a training loop of your own; `classic_augment`: evaluate's classic augmentation;
- `load_run_data(run)`: a run's real images (`.train`, the images its generator saw, with `.train_indices`; `.val`
  and `.test`, the splits evaluate selects and scores on), and `classification_metrics(labels, probs)`: evaluate's
  scores (ACC, AUC, balanced ACC, macro-F1, recall per class);
- `SynthaugPipeline`: a finished model folder (`<run>/models/<model_dir>`) as a diffusers pipeline.
"""

from synthaug.core.version import __version__

# public name -> the module that defines it; no subpackage shares a name with a public function, so importing a
# subpackage never rebinds one of these attributes
_PUBLIC = {
    "Recipe": "synthaug.recipe.recipe",
    "load_recipe": "synthaug.recipe.recipe",
    "open_run": "synthaug.storage.rundir",
    "fit": "synthaug.diffusion.training",
    "generate": "synthaug.generation.generate",
    "GenerateOptions": "synthaug.generation.generate",
    "evaluate": "synthaug.evaluation.evaluate",
    "audit": "synthaug.auditing.audit",
    "experiment": "synthaug.study.experiment",
    "sweep": "synthaug.study.sweep",
    "SynthDataset": "synthaug.data.synthetic",
    "mix_real_synthetic": "synthaug.data.synthetic",
    "ArmDataset": "synthaug.data.arms",
    "AddSynthetic": "synthaug.data.arms",
    "SyntheticOnly": "synthaug.data.arms",
    "TopUp": "synthaug.data.arms",
    "ReplaceWithVariations": "synthaug.data.arms",
    "ArmBatches": "synthaug.data.arms",
    "classic_augment": "synthaug.classifier.harness",
    "load_run_data": "synthaug.reference.realdata",
    "classification_metrics": "synthaug.classifier.harness",
    "SynthaugPipeline": "synthaug.diffusion.pipeline",
    "UserError": "synthaug.core.errors",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
