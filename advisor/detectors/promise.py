"""Promise: how likely a run is to end better than a target (e.g. the best trial of a sweep).

Algorithm: the run keeps its best checkpoint, so its final result is ``min(best, F)`` where ``F``
is the monitored value at the end of the budget. ``F`` is read from the learning-curve forecast
as a split normal distribution: its centre is the forecast value and each side's spread comes
from that side of the forecast's prediction interval. The chance of beating ``target`` is 1 when
the best so far already beats it, else ``P(F < target)``.

Assumptions and when it is wrong: the forecast's interval must be calibrated (it is, on the
benchmark curves, within a few points of its nominal level); curves that improve again after a
long plateau (double descent, grokking, a learning-rate drop the history does not show) are given
too little chance. Lower is better here; callers negate ``mode="max"`` metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["PeerResult", "PromiseResult", "chance_from_peers", "chance_to_beat"]

_NORMAL = NormalDist()


@dataclass(frozen=True)
class PromiseResult:
    """The chance that a run ends better than ``target``.

    Attributes:
        probability: ``P(min(best, F) < target)``.
        target: the value to beat (lower is better).
        best: the run's best value so far.
        forecast: the forecast centre ``F``; ``interval`` its prediction interval at ``level``.
    """

    probability: float
    target: float
    best: float
    forecast: float
    interval: tuple[float, float]
    level: float


def chance_to_beat(target: float, best: float, forecast: float, low: float, high: float,
                   level: float) -> PromiseResult:
    """The chance that a run whose best so far is ``best`` and whose forecast at the end of the
    budget is ``forecast`` (``level`` interval ``[low, high]``) ends below ``target``.

    >>> round(chance_to_beat(0.5, best=0.8, forecast=0.6, low=0.5, high=0.7, level=0.9)
    ...       .probability, 3)
    0.05
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), but got {level}.")
    values = (target, best, forecast, low, high)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"target, best and the forecast must be finite, but got {values}.")
    low, high = min(low, forecast), max(high, forecast)
    if best < target:
        p = 1.0
    else:
        z = _NORMAL.inv_cdf(0.5 + level / 2)
        half = (forecast - low) if target < forecast else (high - forecast)
        if half <= 0:
            p = 1.0 if forecast < target else 0.0
        else:
            p = _NORMAL.cdf((target - forecast) / (half / z))
    return PromiseResult(probability=p, target=float(target), best=float(best),
                         forecast=float(forecast), interval=(float(low), float(high)),
                         level=float(level))


@dataclass(frozen=True)
class PeerResult:
    """How often runs that already finished improved enough, after this step, to beat ``target``.

    Attributes:
        probability: ``(gained_enough + 1) / (peers + 1)`` (NaN when there are no peers).
        needed: the improvement this run needs to beat ``target`` (its best minus the target).
        largest: the largest improvement any peer made after ``step``.
        gained_enough: how many of them improved by more than ``needed``.
        peers: how many finished runs had reached ``step`` and went on past it.
    """

    probability: float
    needed: float
    gained_enough: int
    largest: float
    peers: int
    step: float


def chance_from_peers(target: float, best: float, peer_best_at_step: np.ndarray,
                      peer_final: np.ndarray, step: float) -> PeerResult:
    """The chance that a run whose best is ``best`` gains enough after ``step`` to end below
    ``target``, judged by the gains of finished runs after that step (their best so far at
    ``step`` minus their final best): the conformal p-value ``(k + 1) / (n + 1)`` where ``k`` of
    the ``n`` finished runs gained more than needed. If the run's gain is exchangeable with
    theirs, the chance that it beats all but ``k`` of them is at most that; so it takes at
    least 19 finished runs to fall below 0.05.

    Runs of one sweep share a task, a model and a metric, so how much they still improved after
    a step says how much a run can still improve after it. Wrong when the run differs in kind
    from every finished one (a learning rate far outside the others' range, a slow starter):
    :class:`advisor.AdvisorPruner` therefore also asks the run's own learning-curve forecast.

    >>> chance_from_peers(0.2, best=0.5, peer_best_at_step=np.array([0.4, 0.3, 0.25]),
    ...                   peer_final=np.array([0.2, 0.21, 0.22]), step=10).probability
    0.25
    """
    gains = np.asarray(peer_best_at_step, float) - np.asarray(peer_final, float)
    gains = gains[np.isfinite(gains)]
    needed = float(best - target)
    k = int(np.sum(gains > needed))
    p = (k + 1.0) / (gains.size + 1.0) if gains.size else math.nan
    return PeerResult(probability=p, needed=needed, gained_enough=k,
                      largest=float(gains.max()) if gains.size else math.nan,
                      peers=int(gains.size), step=float(step))
