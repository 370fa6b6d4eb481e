"""Overfitting: validation significantly worse since its best while training goes on."""

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
        gap: median of the latest checks minus the best, in metric units.
        tolerance: the smallest gap that counts.
        generalization_loss: Prechelt's GL = 100 * (latest / best - 1) on ``raw_values`` (default:
            the values), defined for positive losses; NaN otherwise (e.g. negated accuracies).
        progress_quotient: Prechelt's PQ = GL / P_k with the training progress P_k over the last
            strip of ``k`` checks (NaN without a training metric).
        train_trend: trend of the training metric over the same checks, if given.
        onset: the verdict rests on the onset rule: validation has not improved at all over at
            least ``stall_points`` checks since its best while training kept improving
            significantly (the point where the two curves part), not on a significant rise.
        checks_since_best: how many checks came after the best one.
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
    alpha: float = 0.05,
    min_after: int = 3,
    neighbours: int = 2,
    strip: int = 5,
    max_points: int = 48,
    stall_points: int | None = None,
    train_alpha: float = 0.01,
) -> OverfittingResult:
    """Test whether validation (lower is better) got significantly worse since its best.

    Algorithm: the best check is the minimum of a 3-point running median (a single lucky check
    is not the best). Evidence that the curve has turned: the latest checks (as many as came
    after the best, at most 8 and at least ``min_after``) are worse than the ``neighbours`` checks
    on each side of the best (Mann-Whitney U, one-sided), validation has risen since its best
    (Mann-Kendall increasing), and the gap exceeds ``tolerance``. When a training curve is given,
    overfitting also requires that training is not getting worse (else the run is unstable, not
    overfitting). Onset rule (with a training curve and ``stall_points``): after at least
    ``stall_points`` checks since the best, validation with no downward trend at all (Mann-Kendall
    statistic >= 0) while training still improves significantly (Mann-Kendall decreasing,
    p < ``train_alpha``) is overfitting too, before validation has risen by a significant
    margin: training goes on fitting what no longer generalises. Prechelt's GL and PQ are
    reported as evidence, not used to decide.

    Wrong when: the validation curve comes back down later (double descent, a learning-rate decay
    after a noisy phase, grokking), or the validation set is tiny and very noisy.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    n = y.size
    raw = y if raw_values is None else np.asarray(raw_values, dtype=float)
    nan = math.nan
    if n < min_after + 3:
        return OverfittingResult(False, int(np.argmin(y)) if n else 0, nan, 1.0, None, 0.0,
                                 tolerance, nan, nan, None)
    smooth = median_of_3(y)
    best = int(np.argmin(smooth))
    after = n - 1 - best
    gl = prechelt_gl(float(raw[-1]), float(np.nanmin(raw)))
    train_trend = None
    pq = nan
    if train_values is not None:
        t = np.asarray(train_values, dtype=float)
        pq = prechelt_pq(gl, t[-strip:])
    if after < min_after:
        return OverfittingResult(False, best, nan, 1.0, None, 0.0, tolerance, gl, pq, None,
                                 checks_since_best=after)
    near = y[max(0, best - neighbours) : best + neighbours + 1]
    recent = y[-min(after, 8) :]
    gap = median(recent) - float(smooth[best])
    idx = best + _subsample(after + 1, max_points)
    u_stat, u_p, rise, overfitting = nan, 1.0, None, False
    if gap > tolerance:  # practically worse: test whether it is significantly so
        u_stat, u_p = rank_sum_test(recent, near)
        rise = trend_test(x[idx], y[idx])
        if train_values is not None and u_p < alpha and rise.pvalue_increasing < alpha:
            t = np.asarray(train_values, dtype=float)[idx]
            ok = np.isfinite(t)
            if ok.sum() >= 3:
                train_trend = trend_test(x[idx][ok], t[ok])
        unstable = train_trend is not None and train_trend.pvalue_increasing < alpha
        overfitting = bool(u_p < alpha and rise.pvalue_increasing < alpha and not unstable)
    if not overfitting:
        onset = _onset(x[idx], y[idx], rise, train_values, idx, after, stall_points,
                       train_alpha)
        if onset is not None:
            return OverfittingResult(True, best, u_stat, u_p, onset[0], gap, tolerance, gl, pq,
                                     onset[1], onset=True, checks_since_best=after)
    return OverfittingResult(overfitting, best, u_stat, u_p, rise, gap,
                             tolerance, gl, pq, train_trend, checks_since_best=after)


def _onset(x: np.ndarray, y: np.ndarray, rise: TrendResult | None,
           train_values: np.ndarray | None, idx: np.ndarray, after: int,
           stall_points: int | None, train_alpha: float
           ) -> tuple[TrendResult, TrendResult] | None:
    """The onset rule on the checks ``idx`` since the best (``x``, ``y`` taken there; ``rise``
    their trend if already tested): the validation and training trends when it holds, else
    None."""
    if train_values is None or stall_points is None or after < stall_points:
        return None
    t = np.asarray(train_values, dtype=float)[idx]
    ok = np.isfinite(t)
    if ok.sum() < stall_points:
        return None
    rise = trend_test(x, y) if rise is None else rise
    if rise.statistic < 0:
        return None
    train_trend = trend_test(x[ok], t[ok])
    if train_trend.pvalue_decreasing >= train_alpha:
        return None
    return rise, train_trend
