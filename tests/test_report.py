"""synthaug.evaluation.report: evaluate's report.md states gains in points and copy rates in %, and carries the
audit's label fidelity beside its copy rate."""

from __future__ import annotations

from synthaug.evaluation.report import _audit_lines, gain_ci

AUDIT = {"stale": False, **{f"{m}_{s}": 1.0 for m in ("fd", "precision", "recall", "density", "coverage") for s in ("synthetic", "test", "val")},
         "flagged": 2, "flagged_fraction": 0.0104, "real_val_over_threshold": 0.01, "real_test_over_threshold": 0.012,
         "calibration_split": "val", "label_fidelity": 0.62, "label_fidelity_real_val": 0.93,
         "label_fidelity_lowest": {"class": "basophil", "synthetic": 0.21, "real_val": 0.88}, "copy_quantile": 0.99}


def test_gains_are_in_points():
    gain = {"dacc": 0.0123, "dacc_lo": -0.0041, "dacc_hi": 0.0287, "dacc_verdict": "no difference shown"}
    assert gain_ci(gain, "acc") == "+1.2 [-0.4, +2.9] | no difference shown"
    one = {"dbacc": -0.05, "dbacc_lo": float("nan"), "dbacc_hi": float("nan"), "dbacc_verdict": "too few units"}
    assert gain_ci(one, "bacc") == "-5.0 [no interval: one subset] | too few units"


def test_the_audit_summary_gives_copy_rates_in_percent_and_label_fidelity():
    regime = {"regime": "10/class", "subset_seed": 0, "audit": AUDIT}
    lines = _audit_lines([regime, {"regime": "25/class", "subset_seed": 0}])
    header = next(line for line in lines if line.startswith("| regime |"))
    assert "label fidelity" in header
    row = next(line for line in lines if line.startswith("| 10/class"))
    assert "2 (1.04 %; real val 1.00 %)" in row
    assert "62.00 % (real val 93.00 %; lowest: basophil 21.00 %, real val 88.00 %)" in row
    old = {**AUDIT}  # audits summarised before label fidelity existed
    for key in ("label_fidelity", "label_fidelity_real_val", "label_fidelity_lowest"):
        old.pop(key)
    assert next(line for line in _audit_lines([{**regime, "audit": old}]) if line.startswith("| 10/class")).endswith("| n/a |")
    assert header.count("|") == row.count("|") == next(line for line in lines if line.startswith("| 25/class")).count("|")
