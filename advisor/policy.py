"""The stopping policy: one small pure function from the detectors' named results to a decision.

This is where "why did it stop?" is answered. :class:`Findings` holds what the detectors found at
one check; :func:`decide` reads them in order of precedence and returns a :class:`Decision`
(verdict, whether to stop, and the key of the reason the :class:`~advisor.Advisor` words).
"""

from __future__ import annotations

from dataclasses import dataclass

from .advice import Verdict
from .detectors import DivergenceResult, OverfittingResult, PlateauResult, PlateauState
from .detectors.plan import PlanState
from .detectors.schedule import ScheduleState

__all__ = ["Decision", "Findings", "decide"]

_RATE_CHANGES = ("decay", "restart")  # what the schedule still holds that may move a run
_DECAY_TAKES_BACK = 2.0  # a rise since the best, in tolerances, that a decay ahead may undo


@dataclass(frozen=True)
class Findings:
    """What the detectors found at one check (loss-like: lower is better).

    Attributes:
        checks, min_checks: finite checks so far, and the fewest for any verdict.
        divergence, overfitting: the detectors' results.
        overfitting_run, plateau_run: consecutive checks (this one included) that the
            overfitting and plateau tests held.
        confirm: how many consecutive checks a stop needs.
        plateau: the plateau test on the current phase, ``None`` while the phase is too short.
        schedule: the schedule read from the plan's or the logged rates.
        plan: with a learning-rate plan, whether a decay that matters is ahead; else ``None``.
        progress: share of the budget used (``None`` without a budget).
        min_progress_without_lr: before this share, an unknown schedule holds a plateau back,
            and a run that has not learned yet holds back a plateau or overfitting.
        forecast_gain_low: the low end of the forecast's gain interval (``None``: no forecast).
        tolerance: the smallest gain worth the rest of the budget, in metric units.
        rising: validation is significantly upward, by more than the tolerance, while training
            is not getting worse: since its best, or over the plateau's window (a flat-looking
            window at the end of a rise is still overfitting; a creep smaller than the tolerance
            is a stall).
        learned: the run has improved by more than the tolerance since its first checks, its
            best below an earlier check by that much, and by more than the luck of the best of
            its checks (a curve still at its initial level, at chance, or worse ever since its
            first check, has shown no pace to judge a plateau by: many sit there before they
            learn; a flat, noisy one has a best check below its level by noise alone).
        ahead: what the schedule still holds after this check: ``"restart"`` (the rate rises
            again), ``"decay"`` (it at least halves), ``"none"`` or ``"unknown"`` (see
            :meth:`~advisor.detectors.plan.LrPlan.ahead`).
        headroom: how far the best check is from the best value the metric can take
            (``Advisor(best_possible=...)``), the most training on can still gain; ``None``
            without such a bound.
        rate_raised: the plan has just raised the rate (a warm-up, a one-cycle ramp or a warm
            restart) and it is still at least half its peak (see
            :meth:`~advisor.detectors.plan.LrPlan.raised`).
    """

    checks: int
    min_checks: int
    divergence: DivergenceResult
    overfitting: OverfittingResult
    overfitting_run: int
    plateau: PlateauResult | None
    plateau_run: int
    confirm: int
    schedule: ScheduleState
    plan: PlanState | None
    progress: float | None
    min_progress_without_lr: float
    forecast_gain_low: float | None
    tolerance: float
    rising: bool
    learned: bool = True
    ahead: str = "unknown"
    rate_raised: bool = False
    headroom: float | None = None


@dataclass(frozen=True)
class Decision:
    """The policy's answer: the verdict, whether to stop, and the key of its reason."""

    verdict: Verdict
    should_stop: bool
    why: str


def _decay_ahead(f: Findings) -> bool:
    """A decay that matters is still ahead: the plan's, or, without one, read from the logged
    rate (a decay under way, or a warm-up that a decay usually follows)."""
    if f.plan is not None:
        return f.plan.pending
    return f.schedule.decay_pending or f.schedule.warming_up


def decide(f: Findings) -> Decision:
    """The stopping policy, in order of precedence.

    1. A diverged metric stops at once; but a finite blow-up while the plan has raised the rate,
       it is still above half its peak and the plan lowers it later, is a spike to wait out (a
       raised rate often brings one, and its decay takes it back; if it lasts once the rate has
       halved, it diverged; with no decay ahead, as after a warm-up to a constant rate, there is
       nothing to wait for).
    2. Too few checks: undecided.
    2b. The best check is within the tolerance of the best value the metric can take (an
       accuracy at 1.0, or at 0.995 with a tolerance of 0.00995): stop, whatever the schedule
       holds (nothing worth training for is left; as a plateau, with that reason).
    3. Overfitting (validation rising significantly by more than the tolerance while training
       is not getting worse) stops once confirmed over ``confirm`` checks; but not early in the
       budget in a run that has not improved by the tolerance yet (it has learned nothing it
       could overfit: validation worse than its first checks is a slow start, and many such
       runs learn later), and not while a decay that matters is still ahead (the plan's, or one
       read from the logged rate) and validation is no more than twice the tolerance worse
       than at its best: a lower rate often takes a small rise back and goes on past the best
       (a rise that large is within what one decay brings, an assumption; a larger rise is the
       trend of a model that overfits, which a decay seldom turns: it stops as before).
    4. While the current phase (since the last drop of the rate) is too short: undecided.
    5. Improving, or a window that says neither: no stop.
    6. Flat, but a decay of the rate that matters is still ahead (the plan, or a decay read from
       the logged rate), or the schedule is unknown early in the budget, or the run has not
       learned anything yet (early in the budget, or while the schedule still changes the rate:
       a stuck run has no pace to judge a plateau by, and a lower rate, or a restart to a higher
       one, is what most often moves it, even where earlier decays did not), or the forecast
       still expects more than the tolerance: wait.
    7. Flat, and confirmed over ``confirm`` checks: stop; labelled overfitting if validation has
       been rising by more than the tolerance (``rising``), else plateau.
    """
    if f.divergence.diverged:
        if f.divergence.kind == "blow-up" and f.rate_raised and f.ahead in _RATE_CHANGES:
            return Decision(Verdict.UNDECIDED, False, "spike_at_raised_rate")
        return Decision(Verdict.DIVERGED, True, "diverged")
    if f.checks < f.min_checks:
        return Decision(Verdict.UNDECIDED, False, "too_early")
    if f.headroom is not None and f.headroom <= f.tolerance:
        return Decision(Verdict.PLATEAU, True, "no_headroom")
    if f.overfitting.overfitting:
        if not f.learned and f.progress is not None and f.progress < f.min_progress_without_lr:
            return Decision(Verdict.UNDECIDED, False, "worse_before_learning")
        if _decay_ahead(f) and f.overfitting.gap <= _DECAY_TAKES_BACK * f.tolerance:
            return Decision(Verdict.UNDECIDED, False, "small_rise_before_decay")
        if f.overfitting_run >= f.confirm:
            return Decision(Verdict.OVERFITTING, True, "overfitting")
        return Decision(Verdict.UNDECIDED, False, "overfitting_unconfirmed")
    if f.plateau is None:
        return Decision(Verdict.UNDECIDED, False, "new_phase")
    if f.plateau.state is PlateauState.IMPROVING:
        return Decision(Verdict.IMPROVING, False, "improving")
    if f.plateau.state is PlateauState.UNDECIDED:
        return Decision(Verdict.UNDECIDED, False, "unclear")
    if _decay_ahead(f):
        return Decision(Verdict.UNDECIDED, False,
                        "decay_planned" if f.plan is not None else "decay_likely")
    if (not f.schedule.known and f.progress is not None
            and f.progress < f.min_progress_without_lr):
        return Decision(Verdict.UNDECIDED, False, "schedule_unknown")
    if not f.learned and (f.ahead in _RATE_CHANGES or (
            f.progress is not None and f.progress < f.min_progress_without_lr)):
        return Decision(Verdict.UNDECIDED, False, "not_learning_yet")
    if f.forecast_gain_low is not None and f.forecast_gain_low > f.tolerance:
        return Decision(Verdict.UNDECIDED, False, "forecast_expects_more")
    if f.plateau_run < f.confirm:
        return Decision(Verdict.UNDECIDED, False, "unconfirmed")
    if f.rising:
        return Decision(Verdict.OVERFITTING, True, "rising")
    return Decision(Verdict.PLATEAU, True, "plateau")
