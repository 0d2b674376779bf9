"""sweep.md and the plot of val per lever value, from a constructed summary."""

from __future__ import annotations

from synthaug.study.sweepreport import render_sweep_markdown, val_by_lever_png

GAIN = {"mean": -0.01, "lo": -0.03, "hi": 0.01, "units": 3, "pairs": 6}
CLASSIC = {"hflip": True, "vflip": True, "rot90": True, "rotate_deg": 0.0, "shift": 0.0, "brightness": 0.0, "contrast": 0.0}


def summary(answer: dict | None) -> dict:
    entries = [{"value": "flips", "arm": "real+classic", "val": 0.70, "val_lo": 0.68, "val_hi": 0.72, "units": 3, "pairs": 6,
                "chosen": False, "report": "levers/classic-flips/report.md"},
               {"value": "dihedral", "arm": "real+classic", "val": 0.75, "val_lo": 0.73, "val_hi": 0.77, "units": 3, "pairs": 6,
                "chosen": True, "report": "levers/classic-dihedral/report.md"}]
    levers = [{"lever": "classic", "entries": entries, "chosen": "dihedral", "skipped": None},
              {"lever": "strength", "entries": [], "chosen": None, "skipped": "applies to variations of the real images"}]
    return {"recipe": "blood", "commands": ["synthaug sweep recipes/blood.yaml"], "metric": "acc", "levers": levers,
            "generators": {"../runs/blood-25pc-s0": ["../runs/blood-25pc-s0/samples/all/step_0001500.png"]}, "recommendation": answer}


def answer(verdict: str | None) -> dict:
    """A finished sweep's answer: the val choice, and the confirmation on unseen subsets with `verdict` (None: none)."""
    check = None
    if verdict is not None:
        gain = {"higher": {**GAIN, "mean": 0.02, "lo": 0.005, "hi": 0.035, "units": 5},
                "too few units": {**GAIN, "mean": 0.02, "lo": 0.005, "hi": 0.035, "units": 3}}.get(verdict, {**GAIN, "units": 5})
        check = {"synthetic_arm": "real+replace+classic p0.5", "baseline_arm": "real+classic", "acc": 0.83, "acc_baseline": 0.81,
                 "gain_acc": {**gain, "test_noise": True}, "gain_auc": GAIN, "verdict": verdict, "helps": verdict == "higher"}
    return {"helps": verdict == "higher", "metric": "acc", "synthetic_arm": "real+replace+classic p0.5", "baseline_arm": "real+classic",
            "val_synthetic": 0.76, "val_baseline": 0.75, "val_gain": {**GAIN, "mean": 0.01, "lo": 0.002}, "confirm": check,
            "confirm_report": "confirm/report.md", "report": "final/report.md", "classic": CLASSIC, "classic_name": "dihedral",
            "sets": [{"run": "../runs/blood-25pc-s0", "synthetic": "synthetic-0123456789", "grid": "final/samples_blood-25pc-s0.png"}]}


def test_the_lever_table_marks_the_choice_and_says_why_a_lever_was_not_swept():
    text = render_sweep_markdown(summary(None))
    assert "| classic | dihedral | real+classic | 3 (6) | 0.7500 [0.7300, 0.7700] | **yes** | [report](levers/classic-dihedral/report.md) |" in text
    assert "| strength | — | — | — | not swept: applies to variations of the real images | | |" in text
    assert "The sweep has not finished (levers done: classic, strength)" in text
    assert "[all](../runs/blood-25pc-s0/samples/all/step_0001500.png)" in text
    assert "test" not in text.split("## Levers")[1].split("## Recommendation")[0].lower()  # no test number before the final choice


def test_no_help_is_said_plainly_with_the_confirmation_and_the_classical_augmentation_to_use():
    text = render_sweep_markdown(summary(answer("no difference shown")), "name: blood\n")
    assert ("**Synthetic data does not help this set at this scale (no gain shown); use `real+classic`, the real images with "
            "classical augmentation (the sweep's `dihedral` setting, evaluate.classic: `{hflip: true, vflip: true, rot90: true, "
            "rotate_deg: 0.0, shift: 0.0, brightness: 0.0, contrast: 0.0}`).**") in text
    assert "On 5 real subsets that no choice saw (`confirm/report.md`), test ACC 0.8300 against 0.8100: ΔACC -1.0 points [-3.0, +1.0]" in text
    assert "On val (the data that made every choice, so optimistic)" in text
    assert "```yaml\nname: blood\n```" in text


def test_helps_needs_the_lower_bound_above_0_on_enough_unseen_subsets():
    helps = render_sweep_markdown(summary(answer("higher")), "name: blood\n")
    assert "**Use `real+replace+classic p0.5` with the settings below: it helps.**" in helps and "does not help" not in helps
    assert "ΔACC +2.0 points [+0.5, +3.5] over 5 subset(s) (the interval includes the test set's own sampling noise)" in helps
    assert "ΔAUC -1.0 points [-3.0, +1.0] over 3 subset(s)." in helps  # rows without AUC terms: nothing said of the test set
    check = answer("higher")
    check["confirm"]["gain_auc"] = {**GAIN, "test_noise": True}
    assert "ΔAUC -1.0 points [-3.0, +1.0] over 3 subset(s) (the interval includes the test set's own sampling noise)." in render_sweep_markdown(summary(check))
    few = render_sweep_markdown(summary(answer("too few units")))
    assert "**Too few independent subsets to tell whether synthetic data helps" in few and "it helps.**" not in few
    unconfirmed = render_sweep_markdown(summary(answer(None)))
    assert "**Not confirmed: synthetic data cannot be recommended yet.**" in unconfirmed


def test_the_plot_has_a_panel_per_swept_lever():
    assert val_by_lever_png(summary(None)["levers"], "acc")[:8] == b"\x89PNG\r\n\x1a\n"
    assert val_by_lever_png([], "acc")[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_long_tailed_confirmation_states_the_rare_class_recall_gain_beside_the_headline():
    check = answer("higher")
    check["confirm"]["gain_rare_recall"] = {**GAIN, "mean": 0.12, "lo": 0.04, "hi": 0.20, "units": 5}
    text = render_sweep_markdown(summary(check), "name: blood\n")
    assert "ΔAUC -1.0 points [-3.0, +1.0] over 3 subset(s), Δrare-class recall +12.0 points [+4.0, +20.0] over 5 subset(s)." in text
