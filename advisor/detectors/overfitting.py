"""Overfitting: validation rising significantly, by more than the tolerance, while training
goes on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._stats import TrendResult, median, median_of_3, rank_sum_test, trend_test

__all__ = ["OverfittingResult", "detect_overfitting", "prechelt_gl", "prechelt_pq"]


@dataclass(frozen=True)
class OverfittingResult:
    """Outcome of the overfitting test on a loss-like validation curve (lower is better).

    Attributes:
        overfitting: validation is significantly and practically worse than at its best.
        best_index: index of the best (lightly smoothed) validation check.
        statistic, pvalue: Mann-Whitney U test that the latest checks are worse than those
            around the best (one-sided).
        rise: the Mann-Kendall / Theil-Sen trend of validation since its best (``None`` when too
            few checks came after it).
        gap: median of the latest checks minus the median of the checks around the best, in
            metric units.
        tolerance: the smallest gap that counts.
        generalization_loss: Prechelt's GL = 100 * (latest / best - 1) on ``raw_values`` (default:
            the values), defined for positive losses; NaN otherwise (e.g. negated accuracies).
        progress_quotient: Prechelt's PQ = GL / P_k with the training progress P_k over the last
            strip of ``k`` checks (NaN without a training metric).
        train_trend: trend of the training metric over the same checks, if given.
        onset: always false (the onset rule, "no downward trend since the best while training
            improves", was patience on a smoothed curve and is gone; kept for old callers).
        checks_since_best: how many checks came after the best one.
        rise_size: the Theil-Sen rise over the tested segment, in metric units.
    """

    overfitting: bool
    best_index: int
    statistic: float
    pvalue: float
    rise: TrendResult | None
    gap: float
    tolerance: float
    generalization_loss: float
    progress_quotient: float
    train_trend: TrendResult | None
    onset: bool = False
    checks_since_best: int = 0
    rise_size: float = 0.0

    @property
    def train_improving(self) -> bool | None:
        """Training still improving (significant downward trend), or None without a train metric."""
        if self.train_trend is None:
            return None
        return self.train_trend.pvalue_decreasing < 0.05


def prechelt_gl(latest: float, best: float) -> float:
    """Generalization loss GL(t) = 100 * (E_va(t) / E_opt(t) - 1), Prechelt (1998)."""
    if best > 0 and math.isfinite(latest):
        return 100.0 * (latest / best - 1.0)
    return math.nan


def prechelt_pq(gl: float, train_strip: np.ndarray) -> float:
    """Progress quotient PQ(t) = GL(t) / P_k(t), P_k = 1000 * (mean strip / min strip - 1)."""
    strip = train_strip[np.isfinite(train_strip)]
    if strip.size < 2 or strip.min() <= 0 or not math.isfinite(gl):
        return math.nan
    progress = 1000.0 * (strip.mean() / strip.min() - 1.0)
    return gl / progress if progress > 0 else math.inf


def _subsample(n: int, max_points: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))


def detect_overfitting(
    steps: np.ndarray,
    values: np.ndarray,
    *,
    tolerance: float,
    train_values: np.ndarray | None = None,
    raw_values: np.ndarray | None = None,
    alpha: float = 0.01,
    min_after: int = 3,
    neighbours: int = 2,
    strip: int = 5,
    max_points: int = 48,
    stall_points: int | None = None,
    train_alpha: float = 0.05,
    autocorrelation: float | None = None,
) -> OverfittingResult:
    """Test whether validation (lower is better) is rising: significantly, by more than
    ``tolerance``, while training is not getting worse.

    Algorithm. The best check is the minimum of a 3-point running median (a single lucky check
    is not the best); it names the checkpoint to keep, but the test does not start at it (a
    segment that starts at a chosen minimum leans towards "rising"): the segment tested runs
    from the ``neighbours``-th check after the best to now, and must hold at least
    ``stall_points`` checks (default ``3 + min_after``). Overfitting needs all of:

    - a rising trend over the segment: Mann-Kendall increasing at level ``alpha``, with the
      variance corrected for lag-1 autocorrelation (see ``trend_test``), and the lower end of the
      Theil-Sen slope interval above zero;
    - an effect that matters: the Theil-Sen rise over the segment and the gap between the latest
      checks' median and the median of the checks around the best (not the best itself, low by
      selection) both exceed ``tolerance``;
    - with a training curve, training is not getting worse over the same checks (Mann-Kendall
      increasing at ``train_alpha``): a run whose training loss rises too is unstable, not
      overfitting.

    ``autocorrelation``: the noise's lag-1 autocorrelation when the caller has read it (else
    read from the segment). Validation that merely stalls (no significant rise) is not
    overfitting; the plateau test judges it. The caller confirms the verdict over consecutive
    checks. Prechelt's GL and PQ
    are reported as evidence, not used to decide (Mann-Whitney U of the latest checks against
    those around the best too).

    Wrong when: validation comes back down later (double descent, grokking, a learning-rate
    decay after a noisy rising phase); with strongly autocorrelated noise on few checks the
    AR(1) correction is rough; slow rises smaller than ``tolerance`` over the segment are missed
    until they grow.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    n = y.size
    raw = y if raw_values is None else np.asarray(raw_values, dtype=float)
    nan = math.nan
    need = stall_points if stall_points is not None else min_after + 3
    if n < min_after + 3:
        return OverfittingResult(False, int(np.argmin(y)) if n else 0, nan, 1.0, None, 0.0,
                                 tolerance, nan, nan, None)
    smooth = median_of_3(y)
    best = int(np.argmin(smooth))
    after = n - 1 - best
    gl = prechelt_gl(float(raw[-1]), float(np.nanmin(raw)))
    pq = nan
    t_all = None if train_values is None else np.asarray(train_values, dtype=float)
    if t_all is not None:
        pq = prechelt_pq(gl, t_all[-strip:])
    first = best + neighbours + 1
    if after < min_after:
        return OverfittingResult(False, best, nan, 1.0, None, 0.0, tolerance, gl, pq, None,
                                 checks_since_best=after)
    recent = y[-min(after, 8):]
    near = y[max(0, best - neighbours): best + neighbours + 1]
    # the level around the best, not its minimum: the lowest of many noisy checks is low by
    # selection, and a gap measured from it grows with the noise alone
    gap = median(recent) - median(near)
    if n - first < need:  # too few checks for the trend: the rank test of levels only
        u_stat, u_p = rank_sum_test(recent, near)
        return OverfittingResult(False, best, u_stat, u_p, None, gap, tolerance, gl, pq, None,
                                 checks_since_best=after)
    idx = first + _subsample(n - first, max_points)
    rise = trend_test(x[idx], y[idx], autocorrelation=autocorrelation)
    size = rise.slope * float(x[idx[-1]] - x[idx[0]])
    u_stat, u_p = rank_sum_test(recent, near)
    train_trend = None
    if t_all is not None:
        t = t_all[idx]
        ok = np.isfinite(t)
        if ok.sum() >= 3:
            train_trend = trend_test(x[idx][ok], t[ok])
    unstable = train_trend is not None and train_trend.pvalue_increasing < train_alpha
    overfitting = bool(rise.pvalue_increasing < alpha and rise.low_slope > 0
                       and size > tolerance and gap > tolerance and not unstable)
    return OverfittingResult(overfitting, best, u_stat, u_p, rise, gap, tolerance, gl, pq,
                             train_trend, checks_since_best=after, rise_size=size)
