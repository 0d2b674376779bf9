"""synthaug.evaluation.intervals: coverage measured by simulation, known cases, and the too-few-units verdict."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from synthaug.classifier.harness import label_metrics
from synthaug.evaluation.intervals import MIN_UNITS, balanced_weights, gain_interval, resampled_interval, t_interval, verdict

TRIALS = 2000


def coverage(interval_of, draws: np.ndarray, truth: float) -> float:
    hits = [(lambda r: r["lo"] <= truth <= r["hi"])(interval_of(d)) for d in draws]
    return float(np.mean(hits))


def percentile_bootstrap(values, n_boot: int = 2000, seed: int = 0) -> dict:
    """The interval synthaug used before (percentile bootstrap of the mean): kept here to show the test rejects it."""
    values = np.asarray(values, dtype=float)
    means = values[np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))].mean(1)
    return {"lo": float(np.percentile(means, 2.5)), "hi": float(np.percentile(means, 97.5))}


@pytest.mark.parametrize("units", [3, 5, 10])
@pytest.mark.parametrize("effect", [0.0, 0.7])
def test_the_t_interval_over_units_covers_95_percent(units, effect):
    draws = np.random.default_rng([units, int(effect * 10)]).normal(effect, 1.0, size=(TRIALS, units))
    assert abs(coverage(t_interval, draws, effect) - 0.95) <= 0.02


@pytest.mark.parametrize("units", [3, 5])
def test_the_old_percentile_bootstrap_fails_the_same_check(units):
    draws = np.random.default_rng(units).normal(0.0, 1.0, size=(400, units))
    assert coverage(percentile_bootstrap, draws, 0.0) < 0.93


@pytest.mark.parametrize("units", [3, 5, 10])
@pytest.mark.parametrize("mix", ["units", "test set", "both", "both, units larger"])
@pytest.mark.parametrize("effect", [0.0, 0.01])
def test_the_interval_with_test_set_noise_covers_95_percent(units, mix, effect):
    """Per-image differences = effect + unit effect + test-image effect (shared by every unit) + noise; the truth is the
    effect over new subsets *and* new test images, so the image effects must be in the interval."""
    images = 300
    sd_unit, sd_image = {"units": (0.02, 0.02), "test set": (0.002, 0.3), "both": (0.01, 0.15), "both, units larger": (0.015, 0.1)}[mix]
    rng = np.random.default_rng([units, len(mix), int(effect * 100)])
    hits = []
    for _ in range(TRIALS):
        per_image = (effect + rng.normal(0, sd_unit, (units, 1)) + rng.normal(0, sd_image, (1, images))
                     + rng.normal(0, 0.2, (units, images)))
        r = gain_interval(per_image.mean(1), per_image)
        hits.append(r["lo"] <= effect <= r["hi"])
    assert abs(np.mean(hits) - 0.95) <= 0.02, f"coverage {np.mean(hits):.3f}"


# A long-tailed test set: 200 head, 60 middle and 20 tail images (balanced accuracy weighs each tail image 10x a head one)
CLASS_COUNTS = (200, 60, 20)
CLASS_EFFECTS = np.array([-1.0, 0.0, 2.0])  # x effect: the classes disagree, as when a top-up helps the tail and costs the head
BACC_MIXES = {"units": (0.03, 0.02), "test set": (0.003, 0.3), "both": (0.015, 0.15)}


def arm_chance(q, effect_c, shift):
    return np.clip(q + effect_c + shift, 0, 1)


@functools.lru_cache
def balanced_truth(sd_image: float, effect: float) -> float:
    """The balanced-ACC gain over new subsets and new test images: the mean over the classes of the expected change in
    the chance of being right (by Monte Carlo: the chances are clipped to [0, 1])."""
    rng = np.random.default_rng(0)
    q = rng.uniform(0.35, 0.65, 2_000_000)
    return float(np.mean([np.mean(arm_chance(q, effect * e, rng.normal(0, sd_image, q.shape)) - q) for e in CLASS_EFFECTS]))


def balanced_gain_study(rng, units: int, sd_unit: float, sd_image: float, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """One simulated study of a balanced-ACC gain from 0/1 correctness: each test image has a chance q of being right
    under the baseline, and q + its class's effect + an image shift (shared by every unit) + a unit shift under the
    arm; every unit trains both arms again (fresh Bernoulli draws). Returns the weighted per-image differences
    (units, N) and each image's class."""
    labels = np.repeat(np.arange(len(CLASS_COUNTS)), CLASS_COUNTS)
    q = rng.uniform(0.35, 0.65, len(labels))
    arm = arm_chance(q, effect * CLASS_EFFECTS[labels], rng.normal(0, sd_image, len(labels)) + rng.normal(0, sd_unit, (units, 1)))
    diff = (rng.random((units, len(labels))) < arm).astype(float) - (rng.random((units, len(labels))) < q)
    return diff * balanced_weights(labels), labels


@pytest.mark.parametrize("units", [3, 8])
@pytest.mark.parametrize("mix", list(BACC_MIXES))
@pytest.mark.parametrize("effect", [0.0, 0.06])
def test_the_balanced_accuracy_interval_with_weighted_image_terms_covers_95_percent(units, mix, effect):
    """1,000 studies a case (the benchmark runs 2,000 and 5 units too: reports/intervals.md)."""
    rng = np.random.default_rng([units, len(mix), int(effect * 100), 7])
    hits, truth = [], balanced_truth(BACC_MIXES[mix][1], effect)
    for _ in range(TRIALS // 2):
        per_image, labels = balanced_gain_study(rng, units, *BACC_MIXES[mix], effect)
        r = gain_interval(per_image.mean(1), per_image, labels)
        hits.append(r["lo"] <= truth <= r["hi"])
    assert abs(np.mean(hits) - 0.95) <= 0.02, f"coverage {np.mean(hits):.3f}"


def test_a_balanced_accuracy_interval_over_the_units_alone_is_too_narrow():
    """What balanced-ACC gains had before: with the test set's shared noise, 8 units call a null gain significant far
    more than 5 % of the time."""
    rng = np.random.default_rng(8)
    calls = [verdict(gain_interval(balanced_gain_study(rng, 8, *BACC_MIXES["test set"], 0.0)[0].mean(1))) != "no difference shown"
             for _ in range(500)]
    assert np.mean(calls) > 0.1


def test_weighted_image_terms_average_to_the_balanced_accuracy():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    pred = np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 2])
    assert balanced_weights(labels).tolist() == pytest.approx([10 / 18] * 6 + [10 / 9] * 3 + [10 / 3])
    assert np.mean((pred == labels) * balanced_weights(labels)) == pytest.approx(label_metrics(labels, pred, 3)["bacc"])


def test_a_unit_without_a_score_is_left_out_and_counted_not_too_few_units():
    diffs = [0.02, 0.03, 0.025, 0.028, 0.022, 0.027, np.nan, 0.024]
    r = gain_interval(diffs)
    assert (r["units"], r["unscored"]) == (7, 1) and verdict(r) == "higher"
    per_image = np.tile(np.array(diffs)[:, None], (1, 4)) + np.array([0.01, -0.01, 0.02, -0.02])
    r = gain_interval(per_image.mean(1), per_image)
    assert (r["units"], r["unscored"], r["test_noise"]) == (7, 1, True) and not np.isnan(r["lo"])
    assert verdict(gain_interval([np.nan] * 8)) == "not scored"


def test_without_test_set_noise_a_shared_test_set_makes_intervals_too_narrow():
    """Why the per-image term exists: the units-only interval misses a test-set effect that all units share."""
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(500):
        per_image = rng.normal(0, 0.002, (5, 1)) + rng.normal(0, 0.3, (1, 300)) + rng.normal(0, 0.2, (5, 300))
        r = gain_interval(per_image.mean(1))
        hits.append(r["lo"] <= 0 <= r["hi"])
    assert np.mean(hits) < 0.8


def test_known_cases_and_verdicts():
    r = t_interval([0.01, 0.02, 0.03])
    assert r["mean"] == pytest.approx(0.02) and r["units"] == 3 and r["df"] == 2
    assert r["hi"] - r["mean"] == pytest.approx(4.302653 * 0.01 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) x se
    assert np.isnan(t_interval([0.5])["lo"]) and verdict(t_interval([0.5])) == "too few units"
    many = [0.02, 0.03, 0.025, 0.028, 0.022]
    assert len(many) == MIN_UNITS and verdict(t_interval(many)) == "higher"
    assert verdict(t_interval([-x for x in many])) == "lower"
    assert verdict(t_interval([0.02, -0.02, 0.01, -0.01, 0.0])) == "no difference shown"
    assert verdict(t_interval(many[:3])) == "too few units"  # an interval above 0 from 3 units is still no "yes"
    # identical per-image rows: no spread between units, the test set's noise alone
    per_image = np.tile(np.array([1.0, 0.0, 0.0, -1.0, 1.0, 0.0]), (5, 1))
    g = gain_interval(per_image.mean(1), per_image)
    assert g["test_noise"] and g["mean"] == pytest.approx(1 / 6) and g["lo"] < 0 < g["hi"]


# ---------------------------------------------------------------------------------------------
# Overlapping units (evaluate.resample): subsamples of one user's dataset

def overlapping_studies(rng, studies: int, units: int, fraction: float, images: int = 60, classes: int = 2,
                        seed_sd: float = 0.0) -> np.ndarray:
    """(studies, units) unit gains. Each study draws the user's dataset (`images` per class) from a population of
    skewed per-image effects with mean 0, then `units` subsamples of `fraction` of each class; a unit's gain is the
    mean effect of the images it drew (plus its seeds' own noise, `seed_sd` times the image term's spread)."""
    effects = rng.exponential(1.0, (studies, 1, classes, images)) - 1.0
    n = int(round(fraction * images))
    drawn = rng.random((studies, units, classes, images)).argsort(-1)[..., :n]
    gains = np.take_along_axis(np.broadcast_to(effects, drawn.shape[:-1] + (images,)), drawn, -1).mean((-1, -2))
    return gains + rng.normal(0, seed_sd * np.sqrt((1 - fraction) / (n * classes)), gains.shape)


@pytest.mark.parametrize("units", [5, 10])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_the_corrected_resampled_t_covers_95_percent_with_overlapping_units(units, fraction):
    """Truth: the population's mean gain (0) for a training set of that size, not this dataset's own mean."""
    draws = overlapping_studies(np.random.default_rng([units, int(fraction * 100)]), TRIALS, units, fraction)
    assert abs(coverage(lambda d: resampled_interval(t_interval(d), d, fraction), draws, 0.0) - 0.95) <= 0.02


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_a_plain_t_over_overlapping_units_is_too_narrow(fraction):
    draws = overlapping_studies(np.random.default_rng(7), 1000, 5, fraction)
    assert coverage(t_interval, draws, 0.0) < 0.9


def test_with_noise_of_the_units_own_seeds_the_correction_errs_on_the_wide_side():
    """f / (1 - f) is exact when units differ only by their images; seed noise makes it conservative, never narrow."""
    draws = overlapping_studies(np.random.default_rng(3), TRIALS, 5, 0.5, seed_sd=1.0)
    assert 0.95 <= coverage(lambda d: resampled_interval(t_interval(d), d, 0.5), draws, 0.0) <= 0.995


def test_the_correction_widens_the_units_variance_by_f_over_1_minus_f():
    d = np.array([0.01, 0.03, 0.02, 0.04, 0.00])
    r = resampled_interval(gain_interval(d), d, 0.5)
    assert r["se"] == pytest.approx(d.std(ddof=1) * np.sqrt(1 / 5 + 1.0)) and r["df"] == 4 and r["overlap"] == 0.5
    assert r["mean"] == pytest.approx(0.02) and r["lo"] < t_interval(d)["lo"]
    assert verdict(resampled_interval(gain_interval(d + 0.2), d + 0.2, 0.25)) == "higher" and verdict(r) == "no difference shown"
    # with the test set's per-image term: that term kept, the units' spread widened on top of it
    per_image = np.random.default_rng(0).normal(0.02, 0.3, (5, 200))
    g = gain_interval(per_image.mean(1), per_image)
    w = resampled_interval(g, per_image.mean(1), 0.5)
    assert w["se"] ** 2 == pytest.approx(g["se"] ** 2 + per_image.mean(1).var(ddof=1)) and w["test_noise"]


# ---------------------------------------------------------------------------------------------
# AUC gains: each test image's term of the AUC (DeLong's structural components, harness.auc_terms)

def test_the_auc_terms_average_to_scikit_learns_auc_with_ties_and_absent_classes():
    from sklearn.metrics import roc_auc_score

    from synthaug.classifier.harness import auc_terms, classification_metrics

    rng = np.random.default_rng(11)
    labels = rng.choice(4, 500, p=[0.5, 0.3, 0.15, 0.05])
    # sixteenths that sum to 1 exactly (the AUC renormalises over the classes present): ties within and across classes
    probs = np.array([rng.multinomial(16, p) for p in rng.dirichlet(np.ones(4), 500) * 0.6 + 0.4 * np.eye(4)[labels]]) / 16
    assert auc_terms(labels, probs).mean() == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
    binary = (labels > 0).astype(int)
    two = np.stack([1 - probs[:, 0], probs[:, 0]], 1)
    assert auc_terms(binary, two).mean() == pytest.approx(roc_auc_score(binary, two[:, 1]), abs=1e-12)
    # classes of the classifier absent from test: the AUC over the classes present, as the reported one
    for kept in ([0, 1, 3], [1, 2]):
        part = np.isin(labels, kept)
        terms = auc_terms(labels[part], probs[part])
        assert len(terms) == part.sum() and terms.mean() == pytest.approx(classification_metrics(labels[part], probs[part])["auc"], abs=1e-12)
    assert auc_terms(np.zeros(5, int), probs[:5]) is None  # one class: no AUC, no terms


def delong_components(labels, score) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong and Clarke-Pearson (1988), pair by pair: V10, each positive's share of the negatives it
    outscores, and V01, each negative's share of the positives that outscore it (ties 1/2)."""
    pos, neg = score[labels == 1], score[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(1), psi.mean(0)


def test_the_auc_terms_spread_is_delongs_variance():
    from synthaug.classifier.harness import auc_terms

    rng = np.random.default_rng(12)
    labels = (rng.random(400) < 0.3).astype(int)
    score = np.round(rng.normal(labels, 1.0), 1)  # with ties
    terms = auc_terms(labels, np.stack([1 - 1 / (1 + np.exp(-score)), 1 / (1 + np.exp(-score))], 1))
    v10, v01 = delong_components(labels, score)
    n, m, images = len(v10), len(v01), len(labels)
    s10, s01 = v10.var(ddof=1), v01.var(ddof=1)
    # exactly N / (N - 1) x ((n - 1) / n x S10 / n + (m - 1) / m x S01 / m): DeLong's S10 / n + S01 / m to O(1 / N)
    assert terms.var(ddof=1) / images == pytest.approx(images / (images - 1) * ((n - 1) / n * s10 / n + (m - 1) / m * s01 / m), rel=1e-9)
    assert terms.var(ddof=1) / images == pytest.approx(s10 / n + s01 / m, rel=0.01)


AUC_SIGNAL = 1.0  # each arm's class separation, in standard deviations of an image's feature
AUC_MIXES = {"test set": (0.02, 0.1), "both": (0.15, 0.5)}  # (sd of a unit's signal shift, sd of a unit's noise per image)


def auc_gain_study(rng, units: int, classes: int, effect: float, sd_unit: float, sd_noise: float, images: int = 300) -> np.ndarray:
    """One simulated study of a test AUC gain, as (units, images) per-image differences of the AUC terms. One test set
    of `images` (class shares 70/30 or 60/30/10) is drawn afresh and shared by every unit and both arms. Each image
    has one feature per class for each arm, independent between the arms (they rank the test images differently, so
    the test set's draw moves their AUCs' difference), its own class's raised by the arm's signal (AUC_SIGNAL, plus
    `effect` for the arm); a unit shifts each arm's signal (sd_unit) and adds noise of its own training to each
    score (sd_noise). The class probabilities are the scores' softmax."""
    from synthaug.classifier.harness import auc_terms

    labels = rng.choice(classes, images, p={2: [0.7, 0.3], 3: [0.6, 0.3, 0.1]}[classes])
    own = np.eye(classes)[labels]
    features = [rng.normal(0, 1, (images, classes)) for _ in range(2)]
    diffs = []
    for _ in range(units):
        terms = []
        for feature, signal in zip(features, (AUC_SIGNAL + effect, AUC_SIGNAL)):
            score = feature + own * (signal + rng.normal(0, sd_unit)) + rng.normal(0, sd_noise, feature.shape)
            probs = np.exp(score - score.max(1, keepdims=True))
            terms.append(auc_terms(labels, probs / probs.sum(1, keepdims=True)))
        diffs.append(terms[0] - terms[1])
    return np.array(diffs)


def auc_truth(classes: int, effect: float, sd_unit: float, sd_noise: float) -> float:
    """The AUC gain over new units and new test sets. Two classes: class 1's probability ranks as the difference of the
    two scores, which differ by the signal between the classes with variance 2 (1 + sd_noise²) within each, so an arm's
    AUC is Phi(signal / sqrt(1 + sd_noise²)), averaged over the unit's shift of the signal. Three: only the null (0),
    by symmetry."""
    from scipy.stats import norm

    if classes == 3:
        assert effect == 0
        return 0.0
    spread = np.sqrt(1 + sd_noise ** 2 + sd_unit ** 2)
    return float(norm.cdf((AUC_SIGNAL + effect) / spread) - norm.cdf(AUC_SIGNAL / spread))


@pytest.mark.slow
@pytest.mark.parametrize("units", [3, 8])
@pytest.mark.parametrize("mix", list(AUC_MIXES))
@pytest.mark.parametrize("classes, effect", [(2, 0.0), (2, 0.3), (3, 0.0)])
def test_the_auc_interval_with_the_terms_covers_95_percent(units, mix, classes, effect):
    """1,000 studies a case; the units-only interval, from the same studies, misses the test set's noise."""
    rng = np.random.default_rng([units, len(mix), classes, int(effect * 10), 13])
    truth = auc_truth(classes, effect, *AUC_MIXES[mix])
    hits, units_only = [], []
    for _ in range(TRIALS // 2):
        per_image = auc_gain_study(rng, units, classes, effect, *AUC_MIXES[mix])
        for found, interval in ((hits, gain_interval(per_image.mean(1), per_image)), (units_only, gain_interval(per_image.mean(1)))):
            found.append(interval["lo"] <= truth <= interval["hi"])
    assert abs(np.mean(hits) - 0.95) <= 0.02, f"coverage {np.mean(hits):.3f}"
    if mix == "test set":
        assert np.mean(units_only) < 0.8, f"units-only coverage {np.mean(units_only):.3f}"
