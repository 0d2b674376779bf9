"""sweep.md and the plot of val per lever value, from a constructed summary."""

from __future__ import annotations

from synthaug.study.sweepreport import render_sweep_markdown, val_by_lever_png

GAIN = {"mean": -0.01, "lo": -0.03, "hi": 0.01, "pairs": 6}
CLASSIC = {"hflip": True, "vflip": True, "rot90": True, "rotate_deg": 0.0, "shift": 0.0, "brightness": 0.0, "contrast": 0.0}


def summary(answer: dict | None) -> dict:
    entries = [{"value": "flips", "arm": "real+classic", "val": 0.70, "val_lo": 0.68, "val_hi": 0.72, "pairs": 6, "chosen": False,
                "report": "levers/classic-flips/report.md"},
               {"value": "dihedral", "arm": "real+classic", "val": 0.75, "val_lo": 0.73, "val_hi": 0.77, "pairs": 6, "chosen": True,
                "report": "levers/classic-dihedral/report.md"}]
    levers = [{"lever": "classic", "entries": entries, "chosen": "dihedral", "skipped": None},
              {"lever": "strength", "entries": [], "chosen": None, "skipped": "applies to variations of the real images"}]
    return {"recipe": "blood", "commands": ["synthaug sweep recipes/blood.yaml"], "metric": "acc", "levers": levers,
            "generators": {"../runs/blood-25pc-s0": ["../runs/blood-25pc-s0/samples/all/step_0001500.png"]}, "recommendation": answer}


def answer(helps: bool) -> dict:
    test = {"arm": "real+replace+classic p0.5" if helps else "real+classic", "acc": 0.81, "auc": 0.97, "pairs": 6}
    if helps:
        test.update(gain_acc={**GAIN, "mean": 0.02}, gain_auc=GAIN)
    return {"helps": helps, "metric": "acc", "synthetic_arm": "real+replace+classic p0.5", "baseline_arm": "real+classic",
            "val_synthetic": 0.74, "val_baseline": 0.75, "val_gain": GAIN if not helps else {**GAIN, "mean": 0.01, "lo": 0.002},
            "test": test, "report": "final/report.md", "classic": CLASSIC, "classic_name": "dihedral",
            "sets": [{"run": "../runs/blood-25pc-s0", "synthetic": "synthetic-0123456789", "grid": "final/samples_blood-25pc-s0.png"}]}


def test_the_lever_table_marks_the_choice_and_says_why_a_lever_was_not_swept():
    text = render_sweep_markdown(summary(None))
    assert "| classic | dihedral | real+classic | 6 | 0.7500 [0.7300, 0.7700] | **yes** | [report](levers/classic-dihedral/report.md) |" in text
    assert "| strength | — | — | — | not swept: applies to variations of the real images | | |" in text
    assert "The sweep has not finished (levers done: classic, strength)" in text
    assert "[all](../runs/blood-25pc-s0/samples/all/step_0001500.png)" in text
    assert "test" not in text.split("## Levers")[1].split("## Recommendation")[0].lower()  # no test number before the final choice


def test_no_help_is_said_plainly_with_the_numbers_and_the_classical_augmentation_to_use():
    text = render_sweep_markdown(summary(answer(False)), "name: blood\n")
    assert ("**Synthetic data does not help this set at this scale; use `real+classic`, the real images with classical augmentation "
            "(the sweep's `dihedral` setting, evaluate.classic: `{hflip: true, vflip: true, rot90: true, rotate_deg: 0.0, shift: 0.0, "
            "brightness: 0.0, contrast: 0.0}`).**") in text
    assert "val ACC 0.7400 against 0.7500: a gain of -0.0100 [-0.0300, +0.0100] (95 % paired bootstrap CI, 6" in text
    assert "Test, scored once for this choice (`real+classic`): ACC 0.8100, AUC 0.9700 over 6 pairs." in text
    assert "```yaml\nname: blood\n```" in text


def test_a_helping_arm_comes_with_its_val_gain_then_its_test_result():
    text = render_sweep_markdown(summary(answer(True)), "name: blood\n")
    assert "**Use `real+replace+classic p0.5` with the settings below.** On val it beats" in text
    assert "gain over `real+classic`: ΔACC +0.0200 [-0.0300, +0.0100]" in text
    assert "does not help" not in text and "not distinguishable" not in text


def test_the_plot_has_a_panel_per_swept_lever():
    assert val_by_lever_png(summary(None)["levers"], "acc")[:8] == b"\x89PNG\r\n\x1a\n"
    assert val_by_lever_png([], "acc")[:8] == b"\x89PNG\r\n\x1a\n"
