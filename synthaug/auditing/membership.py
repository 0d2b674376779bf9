"""Membership inference: does a generator, or the set it released, tell its training images from new ones?

Members are the run's training images (classes.json train_indices); non-members are real images of the same
distribution that the run never saw (`audit.membership.non_members`: the val split, or the training split's images
outside the run's subset and pool). At most `members` / `non_member_count` of each, drawn with the seed. Each attack
gives every image a score (higher: more likely a member), and is read as its ROC AUC and its true-positive rate at 1 %
false positives (Carlini et al. 2022: an attack that is sure about a few images matters even at AUC 0.5), each with a
95 % bootstrap interval (members and non-members resampled separately), beside the fair coin: the 95 % range the same
figures take when the member labels are permuted, i.e. what a score that knows nothing gives on these sample sizes.

- **Against the model** (its weights at hand): the denoising loss of each image at a few timesteps, with seeded noise
  (Matsumoto et al. 2023; Carlini et al. 2023 use the loss at one timestep). *loss*: score = -loss (the loss-threshold
  attack of Yeom et al. 2018). *calibrated*: score = -(loss - reference loss), the difficulty calibration of Watson et
  al. 2022: an image that any denoiser finds hard is not a member for that. The reference is a model that never saw
  the members: by default the run's own UNet before training (its seeded initial weights, or the pool model it started
  from); for a stronger attack, the study gives a generator fitted on other images of the same distribution.
  The losses at each timestep are divided by their median over all audited images (no labels used) before averaging.
- **Against the released images alone** (what anyone who gets the set has): each real image's closeness to its
  nearest synthetic image, in pixels (Pearson correlation, with the symmetries training used, as the copy check) and in
  the audit's feature space (score = -Euclidean distance). The same attack with real test images in place of the
  release is the baseline: what releasing images of new patients would give (a feature space trained on the members
  may itself set them apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from scipy.stats import rankdata

from synthaug.classifier.harness import extract_features
from synthaug.core.errors import UserError
from synthaug.core.runtime import pick_device, seeded_generator
from synthaug.data.images import ImageSet, load_split
from synthaug.data.synthetic import read_synthetic
from synthaug.diffusion.unet import build_noise_scheduler, build_unet
from synthaug.recipe.sections import MembershipConfig
from synthaug.reference.metrics import knn_distances, nearest_by_correlation
from synthaug.reference.realdata import RunData, load_run_data, real_features
from synthaug.storage.pixels import to_model_tensor
from synthaug.storage.rundir import POOL_MODEL_DIR, Run, RunDir, open_run

FPR = 0.01  # the false-positive rate at which the true-positive rate is read
LOSS_BATCH = 256
NON_MEMBER_SOURCES = {"val": "the real val split", "train_rest": "the training split's images outside the run's subset and pool"}


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """AUC of scores (higher: member), ties counted half; rows of 2-D arrays are separate samples."""
    scores = np.concatenate([members, non_members], axis=-1)
    ranks = rankdata(scores, axis=-1)
    n1, n0 = members.shape[-1], non_members.shape[-1]
    return (ranks[..., :n1].sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float = FPR) -> np.ndarray:
    """The share of members scored above the threshold that at most `fpr` of the non-members exceed."""
    allowed = int(np.floor(fpr * non_members.shape[-1]))
    threshold = -np.sort(-non_members, axis=-1)[..., allowed]
    return (members > threshold[..., None]).mean(-1)


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def attack_figures(member_scores: np.ndarray, non_member_scores: np.ndarray, resamples: int, seed: int) -> dict:
    """AUC and TPR at 1 % FPR with 95 % bootstrap intervals, and the fair coin's 95 % range (member labels permuted)."""
    m, n = np.asarray(member_scores, dtype=np.float64), np.asarray(non_member_scores, dtype=np.float64)
    rng = np.random.default_rng([seed, len(m), len(n)])
    boot_m, boot_n = m[rng.integers(len(m), size=(resamples, len(m)))], n[rng.integers(len(n), size=(resamples, len(n)))]
    pooled = np.concatenate([m, n])[np.argsort(rng.random((resamples, len(m) + len(n))), axis=1)]
    coin_m, coin_n = pooled[:, : len(m)], pooled[:, len(m):]
    return {
        "auc": float(roc_auc(m, n)),
        "auc_interval": _interval(roc_auc(boot_m, boot_n)),
        "tpr_at_1pct_fpr": float(tpr_at_fpr(m, n)),
        "tpr_interval": _interval(tpr_at_fpr(boot_m, boot_n)),
        "coin": {"auc_interval": _interval(roc_auc(coin_m, coin_n)), "tpr_interval": _interval(tpr_at_fpr(coin_m, coin_n))},
        "members": len(m),
        "non_members": len(n),
    }


def _unets(run: Run, device) -> dict[int, UNet2DModel] | None:
    """Each class's finished UNet (one shared by all classes for a class-conditional run), None when one is missing."""
    models = {}
    for c, model_dir in run.info.models.items():
        if not run.dir.is_finished(model_dir):
            return None
        if model_dir not in models:
            models[model_dir] = UNet2DModel.from_pretrained(str(run.dir.model(model_dir)), subfolder="unet").to(device).eval()
    return {c: models[model_dir] for c, model_dir in run.info.models.items()}


def _initial_unets(run: Run, device) -> tuple[dict[int, UNet2DModel], str]:
    """The UNets the run's models started from: the pool model, or the seeded initial weights `fit` drew."""
    recipe, info = run.recipe, run.info
    if recipe.train.pretrain_steps and run.dir.is_finished(POOL_MODEL_DIR):
        pool = UNet2DModel.from_pretrained(str(run.dir.model(POOL_MODEL_DIR)), subfolder="unet").to(device).eval()
        return {c: pool for c in info.models}, "the pool model the run's models started from (never saw a labelled image)"
    models = {}
    for c, model_dir in info.models.items():
        if model_dir not in models:
            class_idx = -1 if info.conditioning == "class_conditional" else c
            with torch.random.fork_rng(devices=[]):  # fit's own seeding, without moving the audit's global stream
                torch.manual_seed(int(seeded_generator(recipe.train.seed, class_idx).initial_seed()))
                models[model_dir] = build_unet(recipe.model, info.channels, len(info.class_names)).to(device).eval()
    return {c: models[model_dir] for c, model_dir in info.models.items()}, "the run's UNet at initialization (fit's seeded weights)"


@torch.no_grad()
def denoising_losses(unets: dict[int, UNet2DModel], scheduler: DDPMScheduler, conditional: bool, images: ImageSet,
                     timesteps: list[int], noise_draws: int, seed: int, device) -> np.ndarray:
    """Each image's denoising loss (mean squared error of the model's prediction), (N, len(timesteps)), averaged over
    `noise_draws` seeded noise draws shared by every image; each image goes to its class's model, conditioned on its
    class in a class-conditional run."""
    x_all = to_model_tensor(images.images, device)
    labels = np.asarray(images.labels, dtype=np.int64)
    losses = np.zeros((len(labels), len(timesteps)))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        unet = unets[int(c)]
        for i, t in enumerate(timesteps):
            for draw in range(noise_draws):
                noise = torch.randn((1, *x_all.shape[1:]), generator=seeded_generator(seed, draw, i)).to(device)
                for start in range(0, len(rows), LOSS_BATCH):
                    part = rows[start : start + LOSS_BATCH]
                    x = x_all[torch.from_numpy(part).to(device)]
                    step = torch.full((len(part),), t, dtype=torch.long, device=device)
                    eps = noise.expand_as(x)
                    noisy = scheduler.add_noise(x, eps, step)
                    pred = unet(noisy, step, class_labels=torch.full_like(step, int(c)) if conditional else None).sample
                    target = eps if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x, eps, step)
                    losses[part, i] += (pred.float() - target).square().mean(dim=(1, 2, 3)).cpu().numpy() / noise_draws
    return losses


def model_attack(run: Run, members: ImageSet, non_members: ImageSet, settings: MembershipConfig, device,
                 reference: Run | None = None) -> dict | None:
    """The loss-threshold attack and its calibrated variant against the run's finished models; None without them.

    `reference`: a run of the same classes fitted on images that are neither members nor non-members, whose losses
    calibrate (default: the run's own models before training)."""
    unets = _unets(run, device)
    if unets is None:
        return None
    if reference is not None:
        reference_unets, described = _unets(reference, device), f"the finished models of {reference.root}"
        if reference_unets is None or set(reference_unets) != set(unets):
            raise UserError(f"reference {reference.root}: needs finished models for the classes {sorted(unets)}")
    else:
        reference_unets, described = _initial_unets(run, device)
    total = run.recipe.diffusion.num_train_timesteps
    timesteps = sorted({min(total - 1, int(round(f * total))) for f in settings.timesteps})
    scheduler = build_noise_scheduler(run.recipe.diffusion)
    conditional = run.info.conditioning == "class_conditional"
    both = ImageSet(np.concatenate([members.images, non_members.images]), np.concatenate([members.labels, non_members.labels]),
                    members.class_names)

    def losses(models):
        return denoising_losses(models, scheduler, conditional, both, timesteps, settings.noise_draws, settings.seed, device)

    target, calibration = losses(unets), losses(reference_unets)
    scale = np.median(target, axis=0).clip(min=1e-12)  # label-free: every timestep weighs alike
    n = len(members.labels)
    scores = {"loss": -(target / scale).mean(1), "calibrated": -((target - calibration) / scale).mean(1)}
    result = {"timesteps": timesteps, "noise_draws": settings.noise_draws, "reference": described}
    for name, score in scores.items():
        result[name] = attack_figures(score[:n], score[n:], settings.resamples, settings.seed)
    result["loss"]["auc_per_timestep"] = {int(t): float(roc_auc(-target[:n, i], -target[n:, i])) for i, t in enumerate(timesteps)}
    return result


def set_attack(members: ImageSet, non_members: ImageSet, released: np.ndarray, member_features: torch.Tensor,
               non_member_features: torch.Tensor, released_features: torch.Tensor, settings: MembershipConfig, device,
               mirror: bool = False, rotations: bool = False) -> dict:
    """Closeness to the nearest released image, members against non-members: in pixels (correlation, the copy check's
    symmetries) and in feature space (score = -distance)."""
    queries = np.concatenate([members.images, non_members.images])
    pixel = nearest_by_correlation(queries, released, mirror, device, rotations=rotations).correlation
    features = torch.cat([member_features, non_member_features])
    feature = -knn_distances(features, released_features, 1, device=device)[0][:, 0]
    n = len(members.labels)
    return {name: attack_figures(score[:n], score[n:], settings.resamples, settings.seed)
            for name, score in (("pixel", pixel), ("feature", feature))}


def _draw(count: int, limit: int | None, seed: list[int]) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(count, min(count, limit or count), replace=False))


def _train_rest(data: RunData, run: Run) -> ImageSet:
    """The training split's images of the run's classes that neither the labelled subset nor the pool holds."""
    split = load_split(data.recipe.data, "train")
    seen = set(data.train_indices.tolist()) | set((run.info.unlabeled or {}).get("indices", []))
    rest = [i for i in np.flatnonzero(np.isin(split.labels, data.classes)) if int(i) not in seen]
    return split.take(np.asarray(rest, dtype=np.int64))


def membership(run: Run, data: RunData, features: dict[str, torch.Tensor], feature_model: torch.nn.Module, released: ImageSet,
               device, reference: Run | None = None) -> dict:
    """audit.json's `membership` block: both attacks on a subsample of members and non-members (`audit.membership`)."""
    settings = data.recipe.audit.membership
    if settings.non_members == "val":
        pool, pool_features = data.val, features["val"]
    else:
        pool = _train_rest(data, run)
        pool_features = extract_features(feature_model, pool.images, device) if len(pool.labels) else None
    if not len(pool.labels):
        raise UserError(f"audit.membership.non_members: {settings.non_members} holds no image of the run's classes; use val")
    m_rows = _draw(len(data.train.labels), settings.members, [settings.seed, 0])
    n_rows = _draw(len(pool.labels), settings.non_member_count, [settings.seed, 1])
    members, non_members = data.train.take(m_rows), pool.take(n_rows)
    m_features, n_features = features["train"][torch.from_numpy(m_rows)], pool_features[torch.from_numpy(n_rows)]
    report = {
        "members": {"n": len(m_rows), "of": len(data.train.labels), "source": "the run's training images (classes.json train_indices)"},
        "non_members": {"n": len(n_rows), "of": len(pool.labels), "source": NON_MEMBER_SOURCES[settings.non_members]},
        "model": model_attack(run, members, non_members, settings, device, reference),
        "released": {"images": len(released.labels),
                     **set_attack(members, non_members, released.images, m_features, n_features, features["synthetic"], settings,
                                  device, data.mirror, data.rotations)},
        "baseline": {"release": f"the {len(data.test.labels)} real test images in place of the synthetic set",
                     **set_attack(members, non_members, data.test.images, m_features, n_features, features["test"], settings,
                                  device, data.mirror, data.rotations)},
    }
    return report


def membership_inference(run: Run | RunDir | str | Path, synthetic_dir: str | Path | None = None, device=None,
                         reference: Run | RunDir | str | Path | None = None, show_progress: bool = False) -> dict:
    """Both attacks on a run and a set released from it (default `<run>/synthetic`): what audit.json's `membership`
    holds, without the rest of the audit. `run` may be `open_run(path, ["audit.membership.members=200"])`;
    `reference`: a run of the same classes, fitted on other images, whose models calibrate the model attack."""
    device = pick_device(device)
    run = open_run(run)
    data = load_run_data(run)
    released = read_synthetic(Path(synthetic_dir) if synthetic_dir is not None else data.run.synthetic, run, show_progress).images
    feature_model, _, features = real_features(data, device, show_progress)
    features = {**features, "synthetic": extract_features(feature_model, released.images, device)}
    return membership(run, data, features, feature_model, released, device, None if reference is None else open_run(reference))
