"""synthaug.study.estimate: the expected run time printed before an experiment starts."""

from __future__ import annotations

import pytest

from synthaug.study.estimate import duration, expected_seconds, synthetic_count


def test_the_expected_time_is_the_images_to_process_over_the_measured_rates():
    t = expected_seconds(units=5, models=1, fit_steps=1500, fit_batch=32, synthetic_images=300, classifier_runs=8,
                         classifier_steps=500, classifier_batch=64, fit_rate=70.0, generate_rate=5.0, classifier_rate=1000.0)
    assert t["fit"] == pytest.approx(5 * 1500 * 32 / 70)
    assert t["generate"] == pytest.approx(5 * 300 / 5)
    assert t["classifiers"] == pytest.approx(5 * 8 * 500 * 64 / 1000)
    assert t["total"] == pytest.approx(t["fit"] + t["generate"] + t["classifiers"])
    # twice the units: twice the time; per-class models: one fit per class
    assert expected_seconds(10, 1, 1500, 32, 300, 8, 500, 64, 70.0, 5.0, 1000.0)["total"] == pytest.approx(2 * t["total"])
    assert expected_seconds(5, 3, 1500, 32, 300, 8, 500, 64, 70.0, 5.0, 1000.0)["fit"] == pytest.approx(3 * t["fit"])


def test_synthetic_images_follow_what_the_arms_ask_for():
    real = {0: 30, 1: 10, 2: 5}
    assert synthetic_count({"ratio": 1.0}, real) == 45
    assert synthetic_count({"ratio": 0.5}, real) == 15 + 5 + 3  # rounded up per class
    assert synthetic_count({"per_real": 5}, real) == 225
    assert synthetic_count({"balance": True}, real) == 20 + 25  # up to the largest class
    assert synthetic_count({"balance": 12}, real) == 2 + 7  # none for a class already past 12
    assert synthetic_count({}, real) == 0


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (40, 720, 11100)] == ["40 s", "12 min", "3 h 05 min"]
