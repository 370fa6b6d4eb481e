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

__all__ = ["PromiseResult", "chance_to_beat"]

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
