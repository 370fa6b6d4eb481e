"""Divergence: the metric became NaN/infinite or blew up far beyond its usual scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DivergenceResult", "detect_divergence"]


@dataclass(frozen=True)
class DivergenceResult:
    """Whether a loss-like curve (lower is better) has diverged.

    Attributes:
        diverged: the run diverged.
        kind: ``"non-finite"``, ``"blow-up"`` or ``""``.
        statistic: for a blow-up, how far the latest values are above the best, in units of
            ``scale``; for non-finite values, how many of the last checks were non-finite.
        threshold: the value above which a check counts as blown up.
        scale: the robust scale of the curve (its improvement so far, floored by its noise).
        checks: how many consecutive latest checks were beyond the threshold.
    """

    diverged: bool
    kind: str
    statistic: float
    threshold: float
    scale: float
    checks: int


def detect_divergence(
    values: np.ndarray,
    *,
    scale: float,
    best: float,
    blowup: float = 3.0,
    confirm: int = 2,
) -> DivergenceResult:
    """Detect divergence of a curve where lower is better.

    Algorithm: the latest check is non-finite (NaN, +inf, or -inf: a loss does not legitimately
    reach -inf) → diverged at once, since training rarely recovers from NaN weights. Otherwise a
    blow-up is the latest ``confirm`` finite checks all above ``best + blowup * scale``, where
    ``scale`` is the run's own robust scale (the :class:`~advisor.Advisor` passes its improvement
    so far, floored by four noise scales and by ten times the tolerance), so a single spike on a
    noisy curve, or a slow drift early in a run whose noise was read from a few checks, is not a
    divergence. Wrong when a run legitimately spikes for
    several checks and recovers (restarts, warm-up of a new phase): with a learning-rate plan the
    policy waits out a blow-up while the planned rate is raised (see
    :meth:`~advisor.detectors.plan.LrPlan.raised`); without one, raise ``blowup`` or ``confirm``.
    A recovery that outlasts the raised rate (the loss still coming down, but above the
    threshold, once the rate has halved) is called a divergence too: on a zoo holdout run with
    warm restarts, such a stop kept a checkpoint 3.4 times worse than the run's best.
    """
    v = np.asarray(values, dtype=float)
    if v.size and not np.isfinite(v[-1]):
        tail = ~np.isfinite(v[::-1])
        run = int(np.argmin(tail)) if not tail.all() else int(v.size)
        return DivergenceResult(True, "non-finite", float(run), np.nan, scale, run)
    threshold = best + blowup * scale
    finite = v[np.isfinite(v)]
    if not np.isfinite(best) or scale <= 0 or finite.size < confirm + 1:
        return DivergenceResult(False, "", 0.0, threshold, scale, 0)
    recent = finite[-confirm:]
    over = recent > threshold
    statistic = float((recent.min() - best) / scale)
    checks = int(np.argmin(over[::-1])) if not over.all() else confirm
    diverged = bool(over.all())
    return DivergenceResult(diverged, "blow-up" if diverged else "", statistic, threshold, scale,
                            checks)
