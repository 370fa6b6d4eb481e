"""The in-sample stopping ceiling of benchmarks/stopping_bound.py: where its rule stops."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.stopping_bound import first_stop, outcome


def test_the_rule_stops_at_the_second_consecutive_confident_check():
    index = np.array([7, 8, 9, 10, 12, 13])
    chance = np.array([0.96, 0.2, 0.96, 0.97, 0.99, 0.99])
    assert first_stop(index, chance, 0.95, n=20) == 10
    # 10 and 12 are both confident but not consecutive checks (11 was not measured)
    assert first_stop(index, np.array([0.1, 0.1, 0.1, 0.97, 0.99, 0.2]), 0.95, n=20) == 19
    assert first_stop(index, chance, 0.999, n=20) == 19  # never: trains to the last check


def test_outcome_is_the_saved_share_and_the_regret_of_the_kept_best():
    runs = [{"n": 10, "regret": np.linspace(0.1, 0.0, 10)},
            {"n": 4, "regret": np.array([0.5, 0.005, 0.0, 0.0])}]
    got = outcome(runs, [4, 1])
    assert got["saved"] == pytest.approx((5 / 10 + 2 / 4) / 2)
    assert got["regret"] == pytest.approx((runs[0]["regret"][4] + 0.005) / 2)
    assert got["harmful"] == 0.5  # the first run gave up more than 1%
