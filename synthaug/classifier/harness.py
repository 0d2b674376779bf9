"""The downstream classifier harness: classical augmentation, training with val selection (and re-balancing for
long-tailed data: class-balanced batches, logit-adjusted loss, class weights), prediction, metrics, features.

Used by `evaluate` (every arm), by `audit` (its feature space) and by generate's confidence filter.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from synthaug.storage.pixels import to_model_tensor
from synthaug.core.errors import UserError
from synthaug.classifier.networks import build_classifier, classifier_head
from synthaug.data.arms import Replacement, draw_batches
from synthaug.data.symmetries import random_symmetries
from synthaug.recipe.sections import ClassicAugConfig, EvaluateConfig
from synthaug.core.runtime import seeded_generator

PREDICT_BATCH = 512
FEATURE_BATCH = 512
# The evaluate settings that decide a classifier's weights (arms, ratios, seeds... do not).
CLASSIFIER_FIELDS = {"classifier", "width", "steps", "batch_size", "lr", "weight_decay", "milestones", "gamma", "eval_every", "select_on"}

@dataclass
class TrainInfo:
    """What training a classifier did: the val-selected step and the val curve."""

    steps: int
    best_step: int
    val: dict  # metrics of the selected checkpoint on the val split
    curve: list[dict] = field(default_factory=list)  # {"step", "loss", "val_acc", "val_auc", "val_bacc"} at every evaluation
    wall_s: float = 0.0


def classic_augment(x: torch.Tensor, cfg: ClassicAugConfig, gen: torch.Generator) -> torch.Tensor:
    """Random flips, rotation, shift (one affine warp), brightness and contrast of a batch in [-1, 1]."""
    n, device = x.shape[0], x.device

    def uniform(scale: float) -> torch.Tensor:  # in [-scale, scale], drawn on the CPU generator
        return ((torch.rand(n, generator=gen) * 2 - 1) * scale).to(device)

    x = random_symmetries(x, gen, hflip=cfg.hflip, vflip=cfg.vflip, rot90=cfg.rot90 and x.shape[-1] == x.shape[-2])
    if cfg.rotate_deg or cfg.shift:
        angle = uniform(math.radians(cfg.rotate_deg))
        shift_x, shift_y = uniform(2 * cfg.shift), uniform(2 * cfg.shift)  # affine_grid spans [-1, 1]: width 2
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness:
        x = x + 2 * uniform(cfg.brightness)[:, None, None, None]
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + uniform(cfg.contrast))[:, None, None, None] + mean
    return x.clamp(-1, 1)


def classic(cfg: ClassicAugConfig):
    """`classic_augment` with these settings, as `ArmBatches`' and `draw_batches`' `augment(x, generator)`."""
    return lambda x, gen: classic_augment(x, cfg, gen)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities (N, K) of float images (N, C, H, W) in [-1, 1], in eval mode."""
    was_training = model.training
    model.eval()
    probs = [torch.softmax(model(images[i : i + batch_size]).float(), 1).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(probs).numpy()


def classification_metrics(labels: np.ndarray, probs: np.ndarray, rare: list[int] | None = None) -> dict:
    """ACC, AUC (binary for two classes present, else macro one-vs-rest; see `auc_problems`) and `label_metrics`
    (balanced ACC, macro-F1, recall of each class and of the `rare` ones) of class probabilities (N, K)."""
    labels = np.asarray(labels)
    problems = auc_problems(labels, probs)
    # the mean of the binary AUCs is scikit-learn's macro one-vs-rest AUC, to the bit
    auc = float(np.mean([roc_auc_score(positive, score) for positive, score in problems])) if problems else float("nan")
    pred = probs.argmax(1)
    return {"acc": float(accuracy_score(labels, pred)), "auc": auc, **label_metrics(labels, pred, probs.shape[1], rare)}


def auc_problems(labels: np.ndarray, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The binary problems whose AUCs the AUC of `classification_metrics` averages, each as (is positive (N,), score
    (N,)): class 1's probability for a two-class classifier; else each class present against the others (the second
    class against the first when two are present), scored by its probability renormalised over the classes present.
    No problem (an empty list) when the labels hold one class: AUC is undefined there."""
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(present) < 2:
        return []
    if probs.shape[1] == 2:
        return [(labels == 1, probs[:, 1])]
    # Renormalised over the classes present: the classifier also has outputs for classes outside data.classes.
    sub = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
    if len(present) == 2:  # two classes chosen of more (data.classes): one problem, as for a two-class classifier
        return [(labels == present[1], sub[:, 1])]
    return [(labels == c, sub[:, i]) for i, c in enumerate(present)]


def auc_terms(labels: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
    """Each test image's term of the AUC of `classification_metrics` (N,), whose mean is that AUC and whose spread gives
    DeLong's variance: the AUC's linearisation in the images. None where the AUC is undefined (one class).

    In each binary problem, with n positives, m negatives and N = n + m images, DeLong's structural components are
    V10_i, the share of negatives that positive i outscores, and V01_j, the share of positives that outscore negative
    j (ties count 1/2); AUC = mean V10 = mean V01 and Var(AUC) = S10 / n + S01 / m (their sample variances). A positive's
    term is AUC + (N / n)(V10_i - AUC), a negative's AUC + (N / m)(V01_j - AUC): the terms' mean is the AUC exactly,
    and their sample variance divided by N is N / (N - 1) x ((n - 1) / n x S10 / n + (m - 1) / m x S01 / m), DeLong's to
    O(1 / N). A macro AUC's term is the mean of an image's terms over the problems, so the covariance of the classes'
    AUCs (each image is in every problem) is in the spread too."""
    problems = auc_problems(labels, probs)
    if not problems:
        return None
    terms = np.zeros(len(labels))
    for positive, score in problems:
        pos, neg = score[positive], score[~positive]
        n, m = len(pos), len(neg)
        pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
        v10 = (np.searchsorted(neg_sorted, pos, "left") + np.searchsorted(neg_sorted, pos, "right")) / (2 * m)
        v01 = 1 - (np.searchsorted(pos_sorted, neg, "left") + np.searchsorted(pos_sorted, neg, "right")) / (2 * n)
        auc = v10.mean()
        terms[positive] += auc + (n + m) / n * (v10 - auc)
        terms[~positive] += auc + (n + m) / m * (v01 - auc)
    return terms / len(problems)


def label_metrics(labels: np.ndarray, pred: np.ndarray, num_classes: int, rare: list[int] | None = None) -> dict:
    """From predicted classes: the recall of each class, balanced ACC (mean recall over the classes present in
    `labels`), macro-F1 over those classes and the mean recall of the `rare` classes present (nan when none is)."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    present = np.unique(labels)
    recall = recall_score(labels, pred, labels=list(range(num_classes)), average=None, zero_division=0)
    rare = [c for c in rare or [] if c in present]
    return {"recall": [float(r) for r in recall], "bacc": float(recall[present].mean()),
            "f1": float(f1_score(labels, pred, labels=present, average="macro", zero_division=0)),
            "rare_recall": float(recall[rare].mean()) if rare else float("nan")}


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)


def class_weights(labels: np.ndarray, num_classes: int, scheme: str, beta: float = 0.999) -> np.ndarray:
    """Loss weight of each class (K,) for re-weighting: "inverse" 1 / n_c, "effective" (1 - beta) / (1 - beta^n_c)
    (Cui et al. 2019). Classes without images weigh 0. Only ratios matter: the loss is a weighted mean."""
    n = class_counts(labels, num_classes)
    with np.errstate(divide="ignore"):
        w = 1.0 / n if scheme == "inverse" else (1 - beta) / (1 - np.power(beta, n))
    return np.where(n > 0, w, 0.0)


def logit_adjustment(labels: np.ndarray, num_classes: int, tau: float = 1.0) -> np.ndarray:
    """tau x log(class prior) (K,), added to the logits of the training loss (Menon et al. 2021). A class without
    training images gets 0: a very negative term would spare its logits the loss's push down, and test would pick it."""
    n = class_counts(labels, num_classes)
    return np.where(n > 0, tau * np.log(np.maximum(n, 1) / n.sum()), 0.0)


def initial_classifier(cfg: EvaluateConfig, channels: int, num_classes: int, seed: int) -> nn.Module:
    """`cfg.classifier` with the initial weights of `seed` (on the CPU): those of every arm of that seed, whatever its
    data. The global random stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeded_generator(seed, 7).initial_seed()))
        return build_classifier(cfg, channels, num_classes)


def train_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    cfg: EvaluateConfig,
    seed: int,
    num_classes: int | None = None,
    augment: ClassicAugConfig | None = None,
    stream: int = 0,
    show_progress: bool = True,
    desc: str = "classifier",
    sample_weight: torch.Tensor | None = None,
    replace: Replacement | None = None,
    balanced: bool = False,
    logit_adjust: torch.Tensor | None = None,
    soft_targets: torch.Tensor | None = None,
    init_state: dict | None = None,
    steps: int | None = None,
    lr: float | None = None,
    head_only: bool = False,
) -> tuple[nn.Module, TrainInfo]:
    """Train `cfg.classifier` for `cfg.steps` steps (Adam, x`gamma` at each milestone) and return the
    checkpoint with the best val `select_on` metric, with its TrainInfo.

    Images are float (N, C, H, W) in [-1, 1] on the training device, labels int64. The initial weights
    depend on `seed` alone (so arms of one seed start alike); batch order and augmentation on
    (`seed`, `stream`). `augment` applies `classic_augment` to every batch. `sample_weight` (N,) weighs each
    training image's loss (a weighted mean over the batch; class weights for re-weighting); `replace` swaps drawn
    images for their variations. `balanced`: class-balanced batches (`balanced_indices`). `logit_adjust` (K,): added
    to the logits in the training loss only (logit-adjusted loss), never at prediction. `soft_targets` (N, K): each
    image's target probabilities (soft-label arms). `init_state`: start from these weights (a pretrained classifier,
    fine-tuned here) instead of the seed's; `steps` and `lr` replace `cfg.steps` and `cfg.lr` (the two stages of the
    pretrain arms). `head_only`: only the last linear layer (`classifier_head`) learns; every other weight and
    BatchNorm statistic stays as `init_state` left it (the head re-training of decoupled re-training, cRT). The batches
    are `synthaug.data.arms.draw_batches`' (what `ArmBatches` yields for the same seed and stream).
    """
    if len(train_images) == 0:
        raise UserError("evaluate: an arm has no training images")
    device = train_images.device
    num_classes = num_classes or int(max(train_labels.max(), val_labels.max())) + 1
    model = initial_classifier(cfg, train_images.shape[1], num_classes, seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    trained = model
    if head_only:  # the features stay fixed: no gradient reaches them, and eval mode keeps BatchNorm's statistics
        model.requires_grad_(False)
        trained = classifier_head(model).requires_grad_(True)
    steps = steps or cfg.steps
    optimizer = torch.optim.Adam(trained.parameters(), lr=lr or cfg.lr, weight_decay=cfg.weight_decay)
    milestones = sorted({max(1, int(m * steps)) for m in cfg.milestones})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.gamma)
    gen = seeded_generator(seed, stream)
    eval_every = cfg.eval_every or max(1, steps // 10)
    val_np = val_labels.cpu().numpy()
    best_score, best_state, best_step, best_val, curve = None, None, 0, {}, []
    began = time.perf_counter()
    batches = draw_batches(train_images, train_labels, cfg.batch_size, gen, sample_weight=sample_weight, replace=replace, balanced=balanced,
                           augment=None if augment is None else classic(augment), soft_targets=soft_targets)
    model.train(not head_only)
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not show_progress, leave=False, unit="step"):
        batch = next(batches)
        logits = model(batch.x) if logit_adjust is None else model(batch.x) + logit_adjust
        loss = batch.loss(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            val = classification_metrics(val_np, predict(model, val_images))
            curve.append({"step": step, "loss": float(loss.detach()), "val_acc": val["acc"], "val_auc": val["auc"], "val_bacc": val["bacc"]})
            other = "acc" if cfg.select_on == "auc" else "auc"  # the tie-break
            score = tuple(-1.0 if math.isnan(val[k]) else val[k] for k in (cfg.select_on, other))
            if best_score is None or score > best_score:  # ties keep the earlier checkpoint
                best_score, best_step, best_val = score, step, val
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.requires_grad_(True)
    model.eval()
    return model, TrainInfo(steps, best_step, best_val, curve, round(time.perf_counter() - began, 2))


@torch.inference_mode()
def extract_features(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Penultimate-layer features (`model.features`) of uint8 (N, H, W, C) images, float32 (N, F) on the CPU."""
    model.eval().to(device)
    out = [model.features(to_model_tensor(images[i : i + FEATURE_BATCH], device)).float().cpu() for i in range(0, len(images), FEATURE_BATCH)]
    return torch.cat(out)


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order): the same weights, the same hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
