"""The hindsight selector of benchmarks/pruning_bound.py: its epochs and regret on a known sweep."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._sweeps import Population
from benchmarks.pruning_bound import sweep_outcomes

# four configurations, 10 evaluations each: "late" is worst at 20% and best at the end
CURVES = {
    "early": np.linspace(1.0, 0.50, 10),
    "late": np.r_[np.full(2, 2.0), np.linspace(1.5, 0.10, 8)],
    "mid": np.linspace(1.2, 0.60, 10),
    "bad": np.linspace(1.1, 0.90, 10),
}


def _population() -> Population:
    finals = np.array([c.min() for c in CURVES.values()])
    return Population(source="taskset", task="t", metric="val_loss", mode="min", kind="loss",
                      run_ids=tuple(CURVES), curves=tuple(CURVES.values()), budget=10,
                      best=float(finals.min()), median=float(np.median(finals)))


def test_keeping_every_configuration_costs_everything_and_finds_the_best():
    (epochs, regret), = sweep_outcomes(_population(), 0, [(0.2, 4, 1.0, 4)])
    assert epochs == pytest.approx(1.0)
    assert regret == 0.0


def test_a_cut_that_drops_a_slow_starter_pays_its_regret_and_saves_its_epochs():
    pop = _population()
    (epochs, regret), = sweep_outcomes(pop, 0, [(0.2, 1, 1.0, 1)])
    # at 20% (2 evaluations) "early" leads; the others stop there: 10 + 3 x 2 of 40
    assert epochs == pytest.approx(16 / 40)
    assert regret == pytest.approx((0.50 - pop.best) / (pop.median - pop.best))
    (epochs, regret), = sweep_outcomes(pop, 0, [(0.2, 3, 0.8, 1)])
    # keeping 3 at 20% still drops "late" (the worst there); the best of the rest by 80% is
    # "early": 4 x 2 + 3 x 6 + 2
    assert epochs == pytest.approx(28 / 40)
    assert regret == pytest.approx((0.50 - pop.best) / (pop.median - pop.best))
    (epochs, regret), = sweep_outcomes(pop, 0, [(0.2, 4, 0.8, 1)])
    # keeping all 4 at 20%, the second cut finds "late" ahead at 80%: 4 x 2 + 4 x 6 + 2
    assert epochs == pytest.approx(34 / 40)
    assert regret == 0.0
