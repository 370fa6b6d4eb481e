"""Robust statistics shared by the detectors: noise scale and a trend test for serial data."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["TrendResult", "median", "median_of_3", "noise_scale", "rank_sum_test", "trend_test"]

_MAD_TO_SD = 1.4826


def median(values: np.ndarray) -> float:
    """Median of a small 1-d array (``np.median`` without its dispatch overhead)."""
    v = np.sort(values, axis=None)
    m = v.size
    return float(v[m // 2] if m % 2 else 0.5 * (v[m // 2 - 1] + v[m // 2]))


def median_of_3(values: np.ndarray) -> np.ndarray:
    """Running median over 3 points (edges repeat the end values), vectorised."""
    y = np.asarray(values, dtype=float)
    a = np.concatenate(([y[0]], y[:-1]))
    c = np.concatenate((y[1:], [y[-1]]))
    return np.maximum(np.minimum(a, y), np.minimum(np.maximum(a, y), c))


@functools.lru_cache(maxsize=64)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def noise_scale(values: np.ndarray) -> float:
    """Check-to-check noise of a curve: a robust standard deviation of its first differences.

    Differences remove the slow trend; the median absolute deviation around their median ignores
    the few large jumps (drops after a learning-rate decay, spikes). For white noise of standard
    deviation s on a smooth curve, the result is about s.
    """
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return 0.0
    d = np.diff(y)
    mad = median(np.abs(d - median(d)))
    return _MAD_TO_SD * mad / math.sqrt(2.0)


@dataclass(frozen=True)
class TrendResult:
    """Mann-Kendall trend test and Theil-Sen slope with its confidence interval.

    Attributes:
        slope: the Theil-Sen slope (median of pairwise slopes), metric units per step.
        intercept: the matching intercept (median of ``y - slope * x``).
        low_slope, high_slope: the confidence interval of the slope (Sen 1968), widened for
            autocorrelation.
        statistic: Mann-Kendall z (negative: decreasing).
        pvalue: two-sided p-value of "no monotonic trend".
        autocorrelation: lag-1 autocorrelation of the detrended residuals.
        variance_inflation: the factor applied to Var(S) for that autocorrelation (>= 1).
        n: number of points.
    """

    slope: float
    intercept: float
    low_slope: float
    high_slope: float
    statistic: float
    pvalue: float
    autocorrelation: float
    variance_inflation: float
    n: int

    @property
    def pvalue_decreasing(self) -> float:
        """One-sided p-value of "no decreasing trend"."""
        return float(ndtr(self.statistic))

    @property
    def pvalue_increasing(self) -> float:
        """One-sided p-value of "no increasing trend"."""
        return float(ndtr(-self.statistic))


def trend_test(x: np.ndarray, y: np.ndarray, confidence: float = 0.9) -> TrendResult:
    """Mann-Kendall test with Theil-Sen slope, corrected for lag-1 autocorrelation.

    Algorithm: all pairwise slopes and signs (vectorised, O(n^2) memory, so callers pass windows
    of at most a few hundred points). Var(S) uses the tie correction, then the effective-sample-size
    correction of Yue & Wang (2004) for AR(1) residuals: ``n/n* = 1 + 2 sum (1 - k/n) r1^k``. Sen's
    interval for the slope uses the same variance. Assumes x strictly increasing.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    if n < 3:
        return TrendResult(0.0, median(y) if n else 0.0, -math.inf, math.inf, 0.0, 1.0,
                           0.0, 1.0, n)
    i, j = _pairs(n)
    dy = y[j] - y[i]
    slopes = np.sort(dy / (x[j] - x[i]))
    s = float(np.sign(dy).sum())
    m = slopes.size
    slope = float(slopes[m // 2] if m % 2 else 0.5 * (slopes[m // 2 - 1] + slopes[m // 2]))
    intercept = median(y - slope * x)

    var_s = float(n * (n - 1) * (2 * n + 5))
    ys = np.sort(y)
    if np.any(ys[1:] == ys[:-1]):
        _, counts = np.unique(ys, return_counts=True)
        var_s -= float(np.sum(counts * (counts - 1) * (2 * counts + 5)))
    var_s /= 18.0
    resid = y - (slope * x + intercept)
    resid = resid - resid.mean()
    denom = float(resid @ resid)
    r1 = float(resid[:-1] @ resid[1:]) / denom if denom > 0 else 0.0
    r1 = min(max(r1, 0.0), 0.95)
    k = np.arange(1, n)
    inflation = 1.0 + 2.0 * float(np.sum((1.0 - k / n) * r1**k)) if r1 > 0 else 1.0
    var_s *= inflation

    if var_s > 0:
        z = (s - math.copysign(1.0, s)) / math.sqrt(var_s) if s != 0 else 0.0
        c = float(ndtri(0.5 + confidence / 2.0)) * math.sqrt(var_s)
    else:
        z, c = 0.0, 0.0
    lo_i = int(np.clip(math.floor((m - c) / 2.0) - 1, 0, m - 1))
    hi_i = int(np.clip(math.ceil((m + c) / 2.0), 0, m - 1))
    p = float(2.0 * ndtr(-abs(z)))
    return TrendResult(slope, intercept, float(slopes[lo_i]), float(slopes[hi_i]), float(z), p,
                       r1, inflation, n)


def rank_sum_test(later: np.ndarray, earlier: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U test that ``later`` values are larger than ``earlier`` ones (one-sided).

    Returns ``(U, pvalue)`` with the normal approximation, tie and continuity corrections (as
    ``scipy.stats.mannwhitneyu(..., alternative="greater", method="asymptotic")``), computed on the
    pairwise comparison matrix: a handful of points, no scipy dispatch overhead.
    """
    a = np.asarray(later, dtype=float)
    b = np.asarray(earlier, dtype=float)
    n1, n2 = a.size, b.size
    diff = a[:, None] - b[None, :]
    u = float(np.sum(diff > 0) + 0.5 * np.sum(diff == 0))
    both = np.sort(np.concatenate((a, b)))
    n = n1 + n2
    tie_term = 0.0
    if np.any(both[1:] == both[:-1]):
        _, counts = np.unique(both, return_counts=True)
        tie_term = float(np.sum(counts**3 - counts)) / (n * (n - 1))
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return u, 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u, float(ndtr(-z))
