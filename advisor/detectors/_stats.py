"""Robust statistics shared by the detectors: noise scale and a trend test for serial data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["TrendResult", "noise_scale", "trend_test"]

_MAD_TO_SD = 1.4826


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
    mad = float(np.median(np.abs(d - np.median(d))))
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
        return TrendResult(0.0, float(np.median(y)) if n else 0.0, -math.inf, math.inf, 0.0, 1.0,
                           0.0, 1.0, n)
    i, j = np.triu_indices(n, k=1)
    dy = y[j] - y[i]
    slopes = np.sort(dy / (x[j] - x[i]))
    s = float(np.sign(dy).sum())
    slope = float(np.median(slopes))
    intercept = float(np.median(y - slope * x))

    _, counts = np.unique(y, return_counts=True)
    var_s = (n * (n - 1) * (2 * n + 5) - float(np.sum(counts * (counts - 1) * (2 * counts + 5))))
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
    m = slopes.size
    lo_i = int(np.clip(math.floor((m - c) / 2.0) - 1, 0, m - 1))
    hi_i = int(np.clip(math.ceil((m + c) / 2.0), 0, m - 1))
    p = float(2.0 * ndtr(-abs(z)))
    return TrendResult(slope, intercept, float(slopes[lo_i]), float(slopes[hi_i]), float(z), p,
                       r1, inflation, n)
