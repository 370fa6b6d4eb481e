"""The stopping policy on constructed detector results: precedence and every reason to wait."""

from __future__ import annotations

import dataclasses
import math

import pytest

from advisor import Verdict
from advisor.detectors import (
    DivergenceResult,
    OverfittingResult,
    PlateauResult,
    PlateauState,
    ScheduleState,
)
from advisor.detectors._stats import TrendResult
from advisor.detectors.plan import PlanState
from advisor.policy import Findings, decide

FLAT = TrendResult(0.0, 1.0, -1e-4, 1e-4, 0.0, 1.0, 0.0, 1.0, 12)


def plateau(state: PlateauState = PlateauState.PLATEAU) -> PlateauResult:
    return PlateauResult(state, FLAT, 10.0, 21.0, 0.01, 30.0, 0.0, 0.001, 0.01)


def findings(**changes) -> Findings:
    """A run at 60% of its budget that learned, went flat, has a known constant schedule and no
    decay ahead, and has held the plateau for two checks: a stop unless changed."""
    base = Findings(
        checks=30, min_checks=6,
        divergence=DivergenceResult(False, "", 0.0, math.inf, 1.0, 0),
        overfitting=OverfittingResult(False, 10, 0.0, 1.0, None, 0.0, 0.01, 0.0, 0.0, None),
        overfitting_run=0, plateau=plateau(), plateau_run=2, confirm=2,
        schedule=ScheduleState(True, 0, 0.1, 0.1, True, False, False, 0),
        plan=PlanState(False, 0.1, None, None, None, None, "no decay ahead"),
        progress=0.6, min_progress_without_lr=0.5, forecast_gain_low=0.0, tolerance=0.01,
        rising=False, learned=True, ahead="none")
    return dataclasses.replace(base, **changes)


def overfitting(gap: float = 0.05) -> OverfittingResult:
    """Validation worse than at its best by ``gap`` (the tolerance is 0.01)."""
    return dataclasses.replace(findings().overfitting, overfitting=True, gap=gap)


def test_a_flat_confirmed_plateau_with_nothing_ahead_is_a_stop():
    d = decide(findings())
    assert (d.verdict, d.should_stop, d.why) == (Verdict.PLATEAU, True, "plateau")


@pytest.mark.parametrize(("changes", "why"), [
    ({"checks": 4}, "too_early"),
    ({"plateau": None}, "new_phase"),
    ({"plateau": plateau(PlateauState.IMPROVING)}, "improving"),
    ({"plateau": plateau(PlateauState.UNDECIDED)}, "unclear"),
    ({"plan": PlanState(True, 0.1, 40.0, 0.01, None, None, "x0.1 at 40")}, "decay_planned"),
    ({"plan": None, "schedule": ScheduleState(True, 0, 0.1, 0.1, False, False, True, 0)},
     "decay_likely"),
    ({"plan": None, "schedule": ScheduleState(False, 0, 0.1, 0.1, True, False, False, 0),
      "progress": 0.3}, "schedule_unknown"),
    ({"learned": False, "progress": 0.3}, "not_learning_yet"),
    ({"learned": False, "progress": 0.8, "ahead": "restart"}, "not_learning_yet"),
    ({"learned": False, "progress": 0.8, "ahead": "decay"}, "not_learning_yet"),
    ({"forecast_gain_low": 0.05}, "forecast_expects_more"),
    ({"plateau_run": 1}, "unconfirmed"),
])
def test_every_reason_to_wait_on_a_plateau_holds_the_stop_back(changes, why):
    d = decide(findings(**changes))
    assert not d.should_stop and d.why == why


def test_an_unknown_schedule_or_a_run_that_never_learned_stops_in_the_second_half():
    unknown = ScheduleState(False, 0, 0.1, 0.1, True, False, False, 0)
    assert decide(findings(plan=None, schedule=unknown, progress=0.6)).should_stop
    assert decide(findings(learned=False, progress=0.6)).should_stop
    assert decide(findings(learned=False, progress=0.6, ahead="unknown")).should_stop


def test_divergence_comes_first_even_before_enough_checks():
    diverged = DivergenceResult(True, "non-finite", 1.0, math.nan, 1.0, 1)
    d = decide(findings(divergence=diverged, checks=2, plan=PlanState(
        True, 0.1, 40.0, 0.01, None, None, "x0.1 at 40")))
    assert (d.verdict, d.should_stop) == (Verdict.DIVERGED, True)


def test_a_blow_up_while_the_schedule_has_raised_the_rate_is_a_spike_not_a_stop():
    blow_up = DivergenceResult(True, "blow-up", 5.0, 1.0, 0.1, 2)
    d = decide(findings(divergence=blow_up, rate_raised=True, ahead="decay"))
    assert (d.verdict, d.should_stop, d.why) == (Verdict.UNDECIDED, False, "spike_at_raised_rate")
    assert decide(findings(divergence=blow_up)).verdict is Verdict.DIVERGED
    # raised, but nothing lowers the rate later (a warm-up to a constant rate): a divergence
    assert decide(findings(divergence=blow_up, rate_raised=True)).verdict is Verdict.DIVERGED
    nan = DivergenceResult(True, "non-finite", 1.0, math.nan, 1.0, 1)
    assert decide(findings(divergence=nan, rate_raised=True, ahead="decay")).should_stop


def test_a_best_within_the_tolerance_of_the_best_possible_value_stops_whatever_else_holds():
    pending = PlanState(True, 0.1, 40.0, 0.01, None, None, "x0.1 at 40")
    d = decide(findings(headroom=0.0, plan=pending, plateau=None, learned=False,
                        progress=0.1, overfitting=overfitting()))
    assert (d.verdict, d.should_stop, d.why) == (Verdict.PLATEAU, True, "no_headroom")
    # but not before the fewest checks for any verdict, and never over a divergence
    assert decide(findings(headroom=0.0, checks=4)).why == "too_early"
    nan = DivergenceResult(True, "non-finite", 1.0, math.nan, 1.0, 1)
    assert decide(findings(headroom=0.0, divergence=nan)).verdict is Verdict.DIVERGED


def test_a_large_rise_stops_as_overfitting_once_confirmed_whatever_the_schedule_ahead():
    pending = PlanState(True, 0.1, 40.0, 0.01, None, None, "x0.1 at 40")
    first = decide(findings(overfitting=overfitting(), overfitting_run=1, plan=pending))
    assert not first.should_stop and first.why == "overfitting_unconfirmed"
    d = decide(findings(overfitting=overfitting(), overfitting_run=2, plan=pending))
    assert (d.verdict, d.should_stop) == (Verdict.OVERFITTING, True)


@pytest.mark.parametrize("ahead", [
    {"plan": PlanState(True, 0.1, 40.0, 0.01, None, None, "x0.1 at 40")},
    {"plan": None, "schedule": ScheduleState(True, 0, 0.1, 0.1, False, False, True, 0)},
    {"plan": None, "schedule": ScheduleState(True, 0, 0.1, 0.1, False, True, False, 0)},
])
def test_a_small_rise_waits_for_a_decay_ahead_but_not_without_one(ahead):
    # worse than its best by twice the tolerance at most, and the rate falls later (the plan's
    # decay; without a plan, a decay under way or a warm-up read from the logged rate): a lower
    # rate often takes such a rise back
    small = decide(findings(overfitting=overfitting(gap=0.02), overfitting_run=3, **ahead))
    assert (small.should_stop, small.why) == (False, "small_rise_before_decay")
    large = decide(findings(overfitting=overfitting(gap=0.021), overfitting_run=3, **ahead))
    assert (large.verdict, large.should_stop) == (Verdict.OVERFITTING, True)
    nothing_ahead = decide(findings(overfitting=overfitting(gap=0.02), overfitting_run=3))
    assert (nothing_ahead.verdict, nothing_ahead.should_stop) == (Verdict.OVERFITTING, True)


def test_a_run_that_has_learned_nothing_is_not_stopped_as_overfitting_early():
    # validation worse than its first checks while training improves, before the run has
    # improved by the tolerance: a slow start, not overfitting, in the first half
    early = decide(findings(overfitting=overfitting(), overfitting_run=3, learned=False,
                            progress=0.1))
    assert not early.should_stop and early.why == "worse_before_learning"
    late = decide(findings(overfitting=overfitting(), overfitting_run=3, learned=False,
                           progress=0.6))
    assert late.verdict is Verdict.OVERFITTING and late.should_stop


def test_a_confirmed_plateau_whose_window_rises_is_labelled_overfitting():
    d = decide(findings(rising=True))
    assert (d.verdict, d.should_stop, d.why) == (Verdict.OVERFITTING, True, "rising")
