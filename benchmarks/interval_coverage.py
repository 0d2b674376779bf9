"""Coverage and power of synthaug's intervals, by simulation (reports/intervals.md):

    python benchmarks/interval_coverage.py [TRIALS]

Units-only differences ~ Normal(effect, 1): coverage of the Student-t interval (synthaug) and of the percentile
bootstrap (synthaug before), the chance that the t interval lies above 0 for a true effect of 0.5, 1 and 2
between-unit standard deviations (power), and the spread of the interval's half-width (coefficient of variation).
Then the interval with the test set's own noise (two-way: unit x test image) under three mixes of noise, and the same
for balanced-ACC gains (per-image terms weighted N / (K n_c), image effects measured within each class) on a
long-tailed test set, against the units-only interval balanced-ACC gains had before.
"""

from __future__ import annotations

import sys

import numpy as np

from synthaug.evaluation.intervals import balanced_weights, gain_interval, resampled_interval, t_interval, verdict


def bootstrap(values, n_boot=2000, seed=0):
    means = values[np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))].mean(1)
    return np.percentile(means, [2.5, 97.5])


def main(trials: int) -> None:
    rng = np.random.default_rng(0)
    print("| units | t coverage | bootstrap coverage | power at 0.5 sd | at 1 sd | at 2 sd | half-width CV |")
    print("|---|---|---|---|---|---|---|")
    for n in (3, 4, 5, 6, 8, 10):
        null = rng.normal(0, 1, (trials, n))
        t = [t_interval(d) for d in null]
        cover_t = np.mean([r["lo"] <= 0 <= r["hi"] for r in t])
        cover_b = np.mean([lo <= 0 <= hi for lo, hi in (bootstrap(d) for d in null[: trials // 4])])
        power = [np.mean([t_interval(d)["lo"] > 0 for d in rng.normal(e, 1, (trials, n))]) for e in (0.5, 1, 2)]
        widths = np.array([r["hi"] - r["mean"] for r in t])
        print(f"| {n} | {cover_t:.3f} | {cover_b:.3f} | {power[0]:.2f} | {power[1]:.2f} | {power[2]:.2f} | {widths.std() / widths.mean():.2f} |")
    print()
    print("| units | noise mix (sd unit / sd image) | coverage with test-set noise | coverage of the units-only interval |")
    print("|---|---|---|---|")
    for n in (3, 5, 10):
        for su, si in ((0.02, 0.02), (0.01, 0.15), (0.015, 0.1), (0.002, 0.3)):
            hits, hits_units = [], []
            for _ in range(trials):
                per_image = rng.normal(0, su, (n, 1)) + rng.normal(0, si, (1, 300)) + rng.normal(0, 0.2, (n, 300))
                r, u = gain_interval(per_image.mean(1), per_image), gain_interval(per_image.mean(1))
                hits.append(r["lo"] <= 0 <= r["hi"])
                hits_units.append(u["lo"] <= 0 <= u["hi"])
            print(f"| {n} | {su} / {si} | {np.mean(hits):.3f} | {np.mean(hits_units):.3f} |")


def balanced_table(trials: int) -> None:
    """Balanced-ACC gains from 0/1 correctness on a test set of 200 / 60 / 20 images: a test image is right with chance
    q ~ U(0.35, 0.65) under the baseline and q + class effect + image shift (shared by every unit) + unit shift under
    the arm (clipped to [0, 1]); each unit draws both arms' answers afresh. Class effects (-1, 0, 2) x 0.06: the truth
    (the mean over the classes of the expected change, by Monte Carlo) is about +0.02; at effect 0 it is 0."""
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], [200, 60, 20])
    weights, class_effect = balanced_weights(labels), np.array([-1.0, 0.0, 2.0])
    print()
    print("| units | noise mix (sd unit / sd image) | effect | balanced-ACC coverage with test-set noise | units-only coverage | "
          "nulls called higher or lower, units only | with test-set noise |")
    print("|---|---|---|---|---|---|---|")
    for n in (3, 5, 8, 10):
        for su, si in ((0.03, 0.02), (0.003, 0.3), (0.015, 0.15)):
            for effect in (0.0, 0.06):
                q = rng.uniform(0.35, 0.65, 2_000_000)
                truth = np.mean([np.mean(np.clip(q + effect * e + rng.normal(0, si, q.shape), 0, 1) - q) for e in class_effect])
                hits, hits_units, called, called_units = [], [], [], []
                for _ in range(trials):
                    q = rng.uniform(0.35, 0.65, len(labels))
                    arm = np.clip(q + effect * class_effect[labels] + rng.normal(0, si, len(labels)) + rng.normal(0, su, (n, 1)), 0, 1)
                    per_image = weights * ((rng.random(arm.shape) < arm).astype(float) - (rng.random(arm.shape) < q))
                    r, u = gain_interval(per_image.mean(1), per_image, labels), gain_interval(per_image.mean(1))
                    hits.append(r["lo"] <= truth <= r["hi"])
                    hits_units.append(u["lo"] <= truth <= u["hi"])
                    called.append(verdict(r, 0) != "no difference shown")
                    called_units.append(verdict(u, 0) != "no difference shown")
                null = (f"{np.mean(called_units):.3f} | {np.mean(called):.3f}" if effect == 0 else "| ")
                print(f"| {n} | {su} / {si} | {effect:g} | {np.mean(hits):.3f} | {np.mean(hits_units):.3f} | {null} |")


def overlapping_units_table(trials: int) -> None:
    """evaluate.resample: K subsamples of a fraction f of each class of one dataset (60 images per class, 2 classes,
    drawn from a population of skewed per-image effects, mean 0). A unit's gain: the mean effect of its images, plus
    its seeds' own noise with `seeds` times the image term's variance. Truth: the population's 0."""
    rng = np.random.default_rng(1)
    print()
    print("| units | fraction | seed noise / image noise | corrected resampled t coverage | plain t coverage |")
    print("|---|---|---|---|---|")
    images, classes = 60, 2
    for units in (5, 10):
        for fraction in (0.1, 0.25, 0.5, 0.75):
            for seeds in (0.0, 1.0, 4.0):
                n = int(round(fraction * images))
                effects = rng.exponential(1.0, (trials, 1, classes, images)) - 1.0
                drawn = rng.random((trials, units, classes, images)).argsort(-1)[..., :n]
                gains = np.take_along_axis(np.broadcast_to(effects, drawn.shape[:-1] + (images,)), drawn, -1).mean((-1, -2))
                gains = gains + rng.normal(0, np.sqrt(seeds * (1 - fraction) / (n * classes)), gains.shape)
                plain = [t_interval(d) for d in gains]
                corrected = [resampled_interval(r, d, fraction) for r, d in zip(plain, gains)]
                cover = [np.mean([r["lo"] <= 0 <= r["hi"] for r in rs]) for rs in (corrected, plain)]
                print(f"| {units} | {fraction} | {seeds:g} | {cover[0]:.3f} | {cover[1]:.3f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    balanced_table(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    overlapping_units_table(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
