"""synthaug: grow small labelled medical image sets with diffusion models, and measure whether it helps."""

__version__ = "0.1.0"

__all__ = ["SynthDataset", "mix_real_synthetic", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that `import synthaug` (the CLI's --version) does not load torch.
    if name in ("SynthDataset", "mix_real_synthetic"):
        from synthaug import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'synthaug' has no attribute {name!r}")
