"""Robust statistics shared by the detectors: noise scale and a trend test for serial data."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

__all__ = ["TrendResult", "median", "median_of_3", "noise_autocorrelation", "noise_estimate",
           "noise_scale", "rank_sum_test", "trend_test"]

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


def _running_median(d: np.ndarray, size: int) -> np.ndarray:
    """Running median over ``size`` (odd) points, the ends padded with the end values."""
    half = size // 2
    padded = np.concatenate((np.full(half, d[0]), d, np.full(half, d[-1])))
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    return np.partition(windows, half, axis=1)[:, half]


def _detrended(d: np.ndarray, long: bool) -> np.ndarray:
    """Differences less what is left of the curve's trend in them (its bend)."""
    if long:  # enough differences that a running median of 11 is a trend, not the noise
        return d - _running_median(d, 11)
    if d.size >= 8:  # few: take out a robust straight line (a curve's steady bend)
        half = d.size // 2
        k = np.arange(d.size) - (d.size - 1) / 2.0
        return d - k * (median(d[-half:]) - median(d[:half])) / (d.size - half)
    return d


def _mad(d: np.ndarray) -> float:
    return median(np.abs(d - median(d)))


def _noise_parts(y: np.ndarray) -> tuple[float, float]:
    """(robust sd of the detrended first differences, lag-1 autocorrelation ``phi`` of the
    noise); see :func:`noise_scale`. ``phi`` comes from the variance ratio of lag-2 and lag-1
    differences, ``Var(y[t] - y[t-2]) / Var(y[t] - y[t-1]) = 1 + phi`` for AR(1) noise, each
    variance a squared MAD (robust to jumps)."""
    long = y.size >= 24  # the same detrending for both lags
    mad1 = _mad(_detrended(np.diff(y), long))
    if mad1 <= 1e-9 * float(np.max(np.abs(y))):  # no noise, only rounding: nothing to read
        return 0.0, 0.0
    phi = 0.0
    if y.size >= 10:
        mad2 = _mad(_detrended(y[2:] - y[:-2], long))
        # less its sampling error (about 1.5 / sqrt(n) on white noise): a ratio of two MADs on
        # a few dozen checks wanders widely, and a phi read too high inflates every variance
        phi = min(max((mad2 / mad1) ** 2 - 1.0 - 1.5 / math.sqrt(y.size), 0.0), 0.9)
    return _MAD_TO_SD * mad1, phi


def noise_autocorrelation(values: np.ndarray) -> float:
    """Lag-1 autocorrelation of a curve's noise around its trend (0 to 0.9), read from its
    detrended differences as in :func:`noise_scale` (a bend of the trend is not read as
    autocorrelation, as it is from the residuals of a straight-line fit)."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    return _noise_parts(y)[1] if y.size >= 3 else 0.0


def noise_estimate(values: np.ndarray) -> tuple[float, float]:
    """``(noise_scale(values), noise_autocorrelation(values))`` in one pass."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return 0.0, 0.0
    sd, phi = _noise_parts(y)
    return sd / math.sqrt(2.0 * (1.0 - phi)), phi


def noise_scale(values: np.ndarray) -> float:
    """Check-to-check noise of a curve: the standard deviation of the noise around its trend,
    corrected for lag-1 autocorrelation.

    Algorithm: first differences remove the level; a running median of 11 differences (a
    straight line through them on fewer than 23 checks) removes what is left of the slow trend
    (the curve's bend); the median absolute deviation of the remainder ignores the few large
    jumps (drops after a learning-rate decay, spikes). For noise of standard deviation ``s`` and
    lag-1 autocorrelation ``phi`` (AR(1)), lag-k differences have variance
    ``2 s^2 (1 - phi^k)``: ``phi`` is read from the ratio of the lag-2 and lag-1 variances, and
    the scale corrected.

    Assumes AR(1)-like noise on a smooth trend. Strongly autocorrelated noise (``phi`` near 1)
    on few checks is still under-read, since a slow wander looks like trend (``phi`` read as
    about 0.65 at 0.9 on 200 checks, and hardly at all on 30: the estimate is shrunk by its
    sampling error so that white noise is not read as autocorrelated); ``phi`` is capped at
    0.9. The estimate is itself noisy on short stretches: on white noise it reads 0 about two
    times in three, but 0.85 or more on 16% of 20 checks, 11% of 40, 3% of 100 and under 1% of
    200 (a ratio of two MADs varies widely; a 10%-trimmed variance ratio was tried and changed
    nothing that matters on the zoo). A ``phi`` read too high widens the trend test's interval:
    a stop comes later, not sooner.
    """
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return 0.0
    sd, phi = _noise_parts(y)
    return sd / math.sqrt(2.0 * (1.0 - phi))


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


def trend_test(x: np.ndarray, y: np.ndarray, confidence: float = 0.9,
               autocorrelation: float | None = None) -> TrendResult:
    """Mann-Kendall test with Theil-Sen slope, corrected for lag-1 autocorrelation.

    Algorithm: all pairwise slopes and signs (vectorised, O(n^2) memory, so callers pass windows of
    at most a few hundred points). Var(S) uses the tie correction, then the effective-sample-size
    correction of Yue & Wang (2004) for AR(1) noise: ``n/n* = 1 + 2 sum (1 - k/n) r1^k``. ``r1``
    is ``autocorrelation`` when the caller has read the noise's lag-1 autocorrelation (the
    Advisor reads it from the detrended differences of a longer stretch, see
    :func:`noise_estimate`), else the lag-1 autocorrelation of the Theil-Sen residuals (which
    reads a curved trend as autocorrelation too: conservative). Sen's interval for the slope uses
    the same variance, and is never narrower than the least-squares interval from the residuals,
    around either slope (ties collapse it otherwise, and pull the Theil-Sen slope towards 0);
    that interval takes Student's t quantile with ``n - 2`` degrees of freedom on the
    autocorrelation-inflated variance (with the normal quantile, windows of 6 checks of AR(1)
    noise, phi = 0.6, missed the true slope 14 times as often as a 99.9% interval may; with t,
    at the nominal rate). Assumes x strictly increasing and roughly evenly spaced.
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
    if autocorrelation is not None:
        r1 = min(max(float(autocorrelation), 0.0), 0.95)
    else:  # the residuals' own lag-1 autocorrelation (reads a bend as autocorrelation too)
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
    lo_i = min(max(math.floor((m - c) / 2.0) - 1, 0), m - 1)
    hi_i = min(max(math.ceil((m + c) / 2.0), 0), m - 1)
    low, high = float(slopes[lo_i]), float(slopes[hi_i])
    # Sen's interval collapses on heavily tied values (an accuracy on a small validation set
    # moves in steps of one sample, and most pairwise slopes are 0), and the median of tied
    # slopes is pulled towards 0 even when noise dithers the rounding (a drift of one quantum
    # over 40 checks with noise of half a quantum: Theil-Sen reads 15% of it, least squares
    # all of it): never narrower than the least-squares interval from the residuals' spread,
    # with the same autocorrelation inflation, around the Theil-Sen slope and around the
    # least-squares one
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx > 0 and n > 2:
        # Student's t: a window of 6 checks at the confidence the repeated looks need is far
        # wider than the normal quantile says
        z_c = float(stdtrit(n - 2.0, 0.5 + confidence / 2.0))
        ls = float(dx @ (y - y.mean())) / sxx
        for centre, fitted in ((slope, slope * x + intercept),
                               (ls, y.mean() + ls * dx)):
            resid = y - fitted
            half = z_c * math.sqrt(float(resid @ resid) / (n - 2) / sxx * inflation)
            low, high = min(low, centre - half), max(high, centre + half)
    p = float(2.0 * ndtr(-abs(z)))
    return TrendResult(slope, intercept, low, high, float(z), p, r1, inflation, n)


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
