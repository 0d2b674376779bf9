"""Coverage and power of synthaug's intervals, by simulation (reports/intervals.md):

    python benchmarks/interval_coverage.py [TRIALS]

Units-only differences ~ Normal(effect, 1): coverage of the Student-t interval (synthaug) and of the percentile
bootstrap (synthaug before), the chance that the t interval lies above 0 for a true effect of 0.5, 1 and 2
between-unit standard deviations (power), and the spread of the interval's half-width (coefficient of variation).
Then the interval with the test set's own noise (two-way: unit x test image) under three mixes of noise.
"""

from __future__ import annotations

import sys

import numpy as np

from synthaug.evaluation.intervals import gain_interval, t_interval


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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
