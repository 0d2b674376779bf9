"""Differentially private fits (`train.privacy`): DP-SGD (Abadi et al. 2016) with Opacus, inside fit's own loop.

What `PrivacyEngine.make_private_with_epsilon` assembles, assembled here so that every random draw stays keyed by
(seed, class, step) and a resumed run ends bit-exactly where an uninterrupted one does:

- **Poisson sampling**: at each step every training image of the model joins the batch independently with probability
  q = batch_size / N (`poisson_indices`, from the step's seeded generator), so batches vary in size and may be empty;
- **per-sample clipping and noise**: Opacus's `GradSampleModule` (hooks mode: Conv2d, Linear, GroupNorm and Embedding,
  every layer of diffusers' UNet2DModel) computes each image's gradient, `DPOptimizer` clips each to `max_grad_norm`,
  adds Gaussian noise of std noise_multiplier x max_grad_norm (drawn from a generator seeded by the step) and averages
  over the expected batch size;
- **the accountant**: Opacus's RDP accountant, with the noise multiplier calibrated (`get_noise_multiplier`) so that
  epsilon at the model's last step is at most `train.privacy.epsilon` for `delta`. Its history is checkpointed with
  the model (`accelerator.register_for_checkpointing`); the epsilon spent after every step goes to metrics.csv.

The EMA weights, sample grids and the saved model are post-processing of the private weights. A per-class run trains
each model on disjoint images, so the run as a whole is as private as its least private model (parallel composition).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch

from synthaug.core.errors import UserError
from synthaug.recipe.recipe import Recipe
from synthaug.recipe.sections import PrivacyConfig

PRIVACY_EXTRA = 'pip install -e ".[privacy]"'
ACCOUNTANT = "rdp"
EPSILON_COLUMN = "epsilon"  # metrics.csv: the epsilon spent up to each step


def _opacus():
    """The opacus package, or the one-line error naming the extra that installs it."""
    try:
        import opacus
    except ImportError:
        raise UserError(f"train.privacy: needs Opacus, which is not installed; install the extra: {PRIVACY_EXTRA}") from None
    return opacus


def check_private_fit(recipe: Recipe, num_processes: int) -> None:
    """Refuse, in one line, what DP-SGD here does not support."""
    cfg = recipe.train
    refusals = [
        (num_processes > 1, f"runs in one process ({num_processes} launched): Poisson sampling and the accountant are per process"),
        (cfg.gradient_accumulation_steps > 1, "needs train.gradient_accumulation_steps: 1 (a Poisson batch is one step's batch)"),
        (cfg.mixed_precision != "no", "needs train.mixed_precision: no (per-sample gradients are computed in float32)"),
        (cfg.balanced_batches, "needs train.balanced_batches: false (the accountant assumes every image is drawn with the same probability)"),
        (recipe.data.unlabeled is not None, "is not available with data.unlabeled (the pool's images would be trained on without accounting)"),
    ]
    for refused, why in refusals:
        if refused:
            raise UserError(f"train.privacy: {why}")
    _opacus()


@dataclass
class PrivateTraining:
    """One model's DP-SGD state: its sampling rate, noise multiplier, the Opacus accountant and the DP optimizer."""

    config: PrivacyConfig
    images: int  # N, the model's training images
    steps: int
    sample_rate: float
    noise_multiplier: float
    accountant: object  # opacus RDPAccountant (state_dict / load_state_dict: checkpointed with the model)
    optimizer: object  # opacus DPOptimizer, inside accelerate's optimizer
    grad_samples: object  # opacus GradSampleModule: the per-sample gradient hooks on the UNet

    def poisson_indices(self, gen: torch.Generator) -> torch.Tensor:
        """The images of one step's batch: each of the N joins with probability q, independently."""
        return torch.nonzero(torch.rand(self.images, generator=gen) < self.sample_rate).flatten()

    def seed_noise(self, gen: torch.Generator, device: torch.device) -> None:
        """The next optimizer step's Gaussian noise is drawn from `gen`'s seed, on the weights' device."""
        noise = torch.Generator(device).manual_seed(int(gen.initial_seed()))
        self.optimizer.generator = noise

    def empty_batch(self) -> None:
        """A step whose Poisson batch is empty: no image gradient, the optimizer step adds the noise alone."""
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)

    def spent(self) -> float:
        """The epsilon spent so far, at the recipe's delta (0 before the first step)."""
        return float(self.accountant.get_epsilon(self.config.delta)) if self.accountant.history else 0.0

    def after_step(self, done: int) -> float:
        """Account for one step; the epsilon spent. Past the budget, stop with nothing saved for this step."""
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        epsilon = self.spent()
        if epsilon > self.config.epsilon:
            raise UserError(f"train.privacy.epsilon: step {done} spends epsilon {epsilon:.4g} > {self.config.epsilon:g}; stopped, "
                            "nothing saved past the last checkpoint")
        return epsilon

    def check_budget(self, start: int) -> None:
        """Before training from step `start`: the steps left, at this noise, must end within the budget."""
        projected = _accountant()
        projected.history = [*self.accountant.history, (self.noise_multiplier, self.sample_rate, self.steps - start)]
        epsilon = float(projected.get_epsilon(self.config.delta)) if self.steps > start else self.spent()
        if epsilon > self.config.epsilon:
            raise UserError(f"train.privacy.epsilon: {self.steps} steps at noise multiplier {self.noise_multiplier:.4g} would spend "
                            f"epsilon {epsilon:.4g} > {self.config.epsilon:g}; nothing trained (lower train.steps or raise the budget)")

    def close(self) -> None:
        """Training is over: the per-sample gradient hooks and attributes leave the UNet before it is saved."""
        self.grad_samples.cleanup()

    @contextlib.contextmanager
    def quiet_backward(self):
        """Opacus's full backward hooks warn that the UNet's inputs need no gradient: true, and harmless here."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            yield

    def record(self) -> dict:
        """The model's privacy, as summary.json and the model card report it."""
        return {
            "epsilon": self.spent(),
            "target_epsilon": self.config.epsilon,
            "delta": self.config.delta,
            "max_grad_norm": self.config.max_grad_norm,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.sample_rate * self.images,
            "training_images": self.images,
            "steps": self.steps,
            "accountant": ACCOUNTANT,
            "mechanism": "DP-SGD (Opacus): Poisson sampling, per-sample clipping, Gaussian noise",
        }


def _accountant():
    from opacus.accountants import RDPAccountant

    return RDPAccountant()


def make_private(cfg: PrivacyConfig, unet: torch.nn.Module, optimizer: torch.optim.Optimizer, images: int, batch_size: int,
                 steps: int, model_dir: str) -> PrivateTraining:
    """Attach DP-SGD to a new UNet and its optimizer (before `accelerator.prepare`): per-sample gradient hooks, the DP
    optimizer wrapping `optimizer` (use `.optimizer` of the result in its place) and the calibrated noise multiplier."""
    _opacus()
    from opacus import GradSampleModule
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

    if cfg.delta >= 1 / images:
        raise UserError(f"train.privacy.delta: {cfg.delta:g} is not below 1/N = 1/{images} ({model_dir}'s training images); "
                        "a delta that large allows releasing an image outright")
    sample_rate = min(1.0, batch_size / images)
    noise = get_noise_multiplier(target_epsilon=cfg.epsilon, target_delta=cfg.delta, sample_rate=sample_rate, steps=steps,
                                 accountant=ACCOUNTANT)
    grad_samples = GradSampleModule(unet, batch_first=True, loss_reduction="mean")
    dp_optimizer = DPOptimizer(optimizer, noise_multiplier=noise, max_grad_norm=cfg.max_grad_norm,
                               expected_batch_size=max(1, round(sample_rate * images)), loss_reduction="mean")
    return PrivateTraining(cfg, images, steps, sample_rate, noise, _accountant(), dp_optimizer, grad_samples)
