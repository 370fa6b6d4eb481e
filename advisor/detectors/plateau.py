"""Plateau: a noise-aware trend test with practical significance against the budget left."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ._stats import TrendResult, noise_scale, trend_test

__all__ = ["PlateauResult", "PlateauState", "adaptive_window", "block_autocorrelation",
           "detect_plateau", "hidden_change", "metric_resolution", "remaining_gain_horizon",
           "window_means"]


class PlateauState(StrEnum):
    IMPROVING = "improving"
    PLATEAU = "plateau"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class PlateauResult:
    """Outcome of the plateau test on a loss-like curve (lower is better).

    Attributes:
        state: improving, plateau or undecided.
        trend: the Mann-Kendall / Theil-Sen result over the window.
        window_start, window_end: first and last step of the window.
        noise_scale: check-to-check noise in the window.
        horizon: the effective number of steps of improvement still to come.
        projected_gain: gain the point slope projects over the horizon, or, while the window
            falls significantly and the steps left are known, over the steps left, as
            ``projected_gain_high`` is (>= 0, at most ``projected_gain_high``).
        projected_gain_high: gain the optimistic end of the slope interval projects (>= 0).
        tolerance: the smallest gain worth training for.
        stalled: the plateau rests on the stall rule (no downward trend, no new best) rather
            than on the slope interval.
        resolution: the metric's quantum when it is quantized (accuracy on a small validation
            set moves in steps of one sample), else 0.
        hidden: the change over the window that the quantization may hide (see
            :func:`hidden_change`): up to one quantum on a quiet metric, next to nothing on one
            whose noise dithers it; the slope interval's optimistic end was widened by it.
        checks: the checks the window spans when the trend was tested on the means of blocks
            of them (:func:`window_means`); 0 when it was tested on the checks themselves.
        jump_chance: when a quantum is larger than the tolerance, the most the hidden drift
            gives for one more quantum by the budget's end (the hidden change projected over
            the horizon, in quanta, at most 1); 0 otherwise.
    """

    state: PlateauState
    trend: TrendResult
    window_start: float
    window_end: float
    noise_scale: float
    horizon: float
    projected_gain: float
    projected_gain_high: float
    tolerance: float
    stalled: bool = False
    resolution: float = 0.0
    hidden: float = 0.0
    checks: int = 0
    jump_chance: float = 0.0


def hidden_change(resolution: float, noise: float) -> float:
    """The largest change of a quantized metric's level that its checks may not show.

    A window of tied values (accuracy on a small validation set sitting on one level) says the
    slope is small, not zero: without noise, a level may drift by up to one quantum ``q`` and
    leave every check on the same value. Noise before the rounding undoes that (dither): the mean
    of the rounded values follows the level to within about ``(q / pi) exp(-2 pi^2 s^2 / q^2)``
    for Gaussian noise of size ``s`` (the first term of the rounding error's Fourier series;
    Widrow & Kollar, *Quantization Noise*, 2008), so the trend of noisy rounded checks sees the
    level's drift. This returns ``q exp(-2 pi^2 s^2 / q^2)``: one quantum without noise (as much
    as can hide), under 1% of one once the noise before the rounding is half a quantum.
    ``noise`` is the checks' measured scale, rounding included (variance ``s^2 + q^2 / 12``), so
    ``q^2 / 12`` is taken out of it first (a measured noise of half a quantum leaves 3.7%).

    Example:
        >>> [round(hidden_change(0.02, s), 4) for s in (0.0, 0.007, 0.01, 0.02)]
        [0.02, 0.0092, 0.0007, 0.0]

    Wrong when: the noise is far from Gaussian, or its scale was overestimated (an outlier
    inflating it): then less is taken to hide than may.
    """
    if not resolution > 0:
        return 0.0
    ratio = noise / resolution if math.isfinite(noise) else 0.0  # inf for a subnormal quantum
    return resolution * math.exp(-2.0 * math.pi ** 2 * max(ratio * ratio - 1.0 / 12.0, 0.0))


def adaptive_window(n: int, fraction: float, min_points: int, max_points: int) -> np.ndarray:
    """Indices of the trailing window: the latest ``fraction`` of ``n`` checks (at least
    ``min_points``), evenly thinned to at most ``max_points`` (the latest check always in), so a
    long history keeps a long window at a bounded cost; :func:`window_means` turns a thinned
    window into the means of the blocks between its points."""
    size = int(min(n, max(min_points, math.ceil(fraction * n))))
    if size <= max_points:
        return np.arange(n - size, n)
    return np.unique(np.linspace(n - size, n - 1, max_points).round().astype(int))


def window_means(x: np.ndarray, y: np.ndarray, idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
    """The window's checks for the trend test: as they are when :func:`adaptive_window` kept
    every check of its span, else the means of the consecutive blocks its thinned points split
    the span into (every check counts: thinning 350 checks to 48 threw away the data that
    makes a long window's slope precise). Returns ``(x, y, blocked)``."""
    idx = np.asarray(idx)
    first, last = int(idx[0]), int(idx[-1])
    if last - first + 1 == idx.size:
        return x[idx], y[idx], False
    edges = np.linspace(first, last + 1, idx.size + 1).round().astype(int)
    cx = np.concatenate(([0.0], np.cumsum(x[first:last + 1])))
    cy = np.concatenate(([0.0], np.cumsum(y[first:last + 1])))
    e = edges - first
    counts = np.diff(e)
    return np.diff(cx[e]) / counts, np.diff(cy[e]) / counts, True


def block_autocorrelation(phi: float, size: float) -> float:
    """Lag-1 autocorrelation of the means of consecutive blocks of ``size`` checks of AR(1)
    noise with lag-1 autocorrelation ``phi``: ``phi (1 - phi^b)^2 / (b (1 - phi^2) - 2 phi
    (1 - phi^b))`` (the covariance of adjacent block sums over the variance of one, both times
    ``(1 - phi)^2``). Averaging blocks of ``b`` checks leaves less autocorrelation than ``phi``.

    Example:
        >>> round(block_autocorrelation(0.6, 1), 3), round(block_autocorrelation(0.6, 8), 3)
        (0.6, 0.147)
    """
    phi = min(max(float(phi), 0.0), 0.99)
    if phi == 0.0 or size <= 1:
        return phi
    pb = phi ** size
    var = size * (1 - phi * phi) - 2 * phi * (1 - pb)
    return float(phi * (1 - pb) ** 2 / var) if var > 0 else phi


def remaining_gain_horizon(step: float, max_steps: float | None, origin: float,
                           decay: float) -> float:
    """Steps of improvement at the current rate that the rest of the budget is worth.

    Learning curves decelerate: if the improvement rate falls like a power law in the steps since
    ``origin``, ``rate(t) = rate_now * (t / t_now) ** -(1 + decay)``, the gain from now to the
    budget ``T`` is ``rate_now * t_now / decay * (1 - (t_now / T) ** decay)``. The horizon is that
    gain divided by ``rate_now``. Without a budget, the run is assumed to go on for as long again.
    """
    t_now = max(step - origin, 1e-12)
    t_end = (max_steps - origin) if max_steps is not None else 2.0 * t_now
    if t_end <= t_now:
        return 0.0
    return t_now / decay * (1.0 - (t_now / t_end) ** decay)


def window_rate_ratio(start: float, end: float, origin: float, decay: float) -> float:
    """The improvement rate at the window's end over its average rate across the window.

    Under the same model as :func:`remaining_gain_horizon` (the rate falls like
    ``(t - origin) ** -(1 + decay)``), the Theil-Sen slope of a window ``[start, end]`` measures
    the *average* rate over it, which on a decelerating curve overstates the rate now:
    ``rate(end) / mean rate = decay (b - a) / (b ** (1 + decay) (a ** -decay - b ** -decay))``
    with ``a, b`` the window's ends counted from ``origin`` (``a / b`` for ``decay = 1``).
    """
    a, b = max(start - origin, 1e-12), max(end - origin, 1e-12)
    if b <= a:
        return 1.0
    return float(decay * (b - a) / (b ** (1 + decay) * (a ** -decay - b ** -decay)))


def detect_plateau(
    steps: np.ndarray,
    values: np.ndarray,
    *,
    tolerance: float,
    horizon: float,
    noise: float | None = None,
    prior_best: float | None = None,
    stall_points: int | None = None,
    confidence: float = 0.9,
    alpha: float = 0.05,
    autocorrelation: float | None = None,
    resolution: float = 0.0,
    resolution_horizon: float | None = None,
    steps_left: float | None = None,
) -> PlateauResult:
    """Test whether a loss-like curve (lower is better) has stopped improving by a useful margin.

    Algorithm: Mann-Kendall trend test and Theil-Sen slope interval over the window the caller chose
    (autocorrelation-corrected, so smooth averaged curves do not look significant just for being
    smooth). The gain still to come is the slope times ``horizon`` (see
    :func:`remaining_gain_horizon`). Improving: a downward trend (significant, or a slope interval
    below zero) whose projected gain reaches ``tolerance``. Plateau: even the optimistic end of the
    slope interval projects less than ``tolerance``; when the window falls significantly at the
    tests' fixed level (Mann-Kendall at ``alpha``, or the slope's ``1 - 2 alpha`` interval below
    zero), whatever the interval's ``confidence`` (so a wider interval never shortens the
    projection), and ``steps_left`` is given, the projection is
    linear over ``steps_left`` (a curve still falling significantly is not called flat on the
    strength of the deceleration model alone: its deceleration is an assumption, its fall is
    data); with ``stall_points``, also when the
    curve has stalled: no downward trend at all (Theil-Sen slope >= 0) over a window of at least
    ``stall_points`` checks, and the window's best is not ``tolerance`` better than ``prior_best``,
    the best before the window (a rule without error control: under noise, a window with no downward
    trend is common on a curve that still improves; off by default). Undecided otherwise. ``noise``
    (reported as evidence) is measured on the window unless given, and so is the noise's lag-1
    ``autocorrelation`` the trend test corrects for. A quantized metric (``resolution`` > 0, see
    :func:`metric_resolution`) may hide a slope below one quantum per window: a window of tied
    values says the slope is small, not zero, so the optimistic gain adds that hidden slope
    (:func:`hidden_change`, with the noise measured in the window, over the window's length: one
    quantum on a window of tied checks, next to nothing on one whose noise dithers the rounding)
    times ``resolution_horizon`` (default ``horizon``; the caller may pass the budget's own horizon
    where ``horizon`` is floored by the window's length for the slope it saw). When a quantum is
    larger than ``tolerance`` (accuracy on 50 validation samples: 0.02 against a 1% tolerance
    of about 0.005), a gain the checks can show is a whole quantum or nothing: the hidden drift is
    then the chance of one more quantum (its projection in quanta, the level's place within its
    quantum taken as unknown), and a plateau needs that chance within the interval's one-sided
    level ``(1 - confidence) / 2``; such a quiet metric is stopped only near the budget's end,
    or once its noise dithers the rounding. Assumes finite values and increasing steps.

    Wrong when: the curve is about to drop (a learning-rate decay, grokking, double descent);
    the callers pass the schedule so a plateau at a high learning rate is not a stop.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    trend = trend_test(x, y, confidence, autocorrelation)
    noise = noise_scale(y) if noise is None else noise
    gain = max(0.0, -trend.slope) * horizon
    # dither is read in the window itself: tied checks there are what may hide a drift
    hidden = hidden_change(resolution, noise_scale(y)) if resolution > 0 else 0.0
    hidden_slope = hidden / max(float(x[-1] - x[0]), 1e-12) if x.size > 1 else 0.0
    # significantly falling: read at the tests' fixed level (the trend test at alpha, or the
    # slope's 1 - 2 alpha interval below zero), not from the look's interval, so a wider
    # interval never shortens the projection. The interval at that level is only computed where
    # it can matter: with a budget, no significant trend, and an optimistic slope below zero
    # (else the projection's length multiplies nothing)
    falling = steps_left is not None and (trend.pvalue_decreasing < alpha or (
        trend.low_slope < 0 and _falls_at(x, y, trend, 1.0 - 2.0 * alpha, confidence,
                                          autocorrelation)))
    length = steps_left if falling else horizon
    hidden_gain = hidden_slope * (horizon if resolution_horizon is None else resolution_horizon)
    # a quantum larger than the tolerance: the rounded checks gain a whole quantum or nothing,
    # so the drift the rounding may hide is the chance of one more quantum (the share of one it
    # covers, the level's place within its quantum unknown), not a gain to set against the
    # tolerance; that chance must be within the interval's one-sided level
    jump = resolution > tolerance
    jump_chance = min(hidden_gain / resolution, 1.0) if jump else 0.0
    gain_high = max(0.0, -trend.low_slope) * length + (0.0 if jump else hidden_gain)
    stalled = False
    if (trend.pvalue_decreasing < alpha or trend.high_slope < 0) and gain >= tolerance:
        state = PlateauState.IMPROVING
    elif gain_high <= tolerance and jump_chance <= (1.0 - confidence) / 2.0:
        state = PlateauState.PLATEAU
    elif (prior_best is not None and stall_points is not None and y.size >= stall_points
          and trend.slope >= 0
          and prior_best - float(y.min()) < tolerance):
        state, stalled = PlateauState.PLATEAU, True
    else:
        state = PlateauState.UNDECIDED
    # the gain reported is projected over the same length as its optimistic end, so "about X
    # (at most Y)" reads X <= Y (improving was judged over the horizon: a curve still falling
    # at the budget's last check is improving, with nothing left to gain)
    projected = max(0.0, -trend.slope) * length
    return PlateauResult(state, trend, float(x[0]), float(x[-1]), noise, horizon, projected,
                         gain_high, tolerance, stalled, resolution, hidden, jump_chance=jump_chance)


def _falls_at(x: np.ndarray, y: np.ndarray, trend: TrendResult, level: float,
              confidence: float, autocorrelation: float | None) -> bool:
    """Whether the slope's ``level`` interval lies below zero (``trend`` is the test at
    ``confidence``, reused when the levels agree)."""
    ref = trend if confidence == level else trend_test(x, y, level, autocorrelation)
    return ref.high_slope < 0


def metric_resolution(values: np.ndarray) -> float:
    """The quantum of a quantized metric, or 0 for a continuous one.

    A metric is read as quantized when its values repeat exactly (a float loss practically never
    does; accuracy on ``n`` validation samples moves in steps of ``1 / n``) and its distinct
    values lie on one lattice: every gap between neighbouring levels is a whole number of
    quanta, the quantum being the smallest gap seen or a fraction of it down to a twentieth
    (compared relative to the largest value, rounded to 9 digits, so float noise in the division
    does not split one level in two; a gap within 1% of a quantum from a whole number of them
    counts, so float32 accuracies on up to ten thousand samples still line up). A continuous loss
    that stopped changing (a dead network, a rate of zero) repeats its last value exactly, but
    its earlier values are on no lattice: it is continuous, and a window of its ties is flat,
    not a drift that rounding may hide.

    Example:
        >>> round(metric_resolution([0.5, 0.75, 0.875, 0.875, 0.9375, 0.9375]), 6)
        0.0625
        >>> metric_resolution([1.0, 0.6, 0.45, 0.35, 0.2845, 0.2845, 0.2845])
        0.0

    Wrong when: a continuous metric is logged rounded to a few digits (that is quantized too, and
    treated so), or a flat continuous metric had only two or three distinct values before it
    stopped changing (their gaps may line up by chance: read as quantized, its plateau waits for
    the rounding it may hide).
    """
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return 0.0
    size = float(np.abs(y).max())
    if size == 0.0:
        return 0.0
    levels = np.unique(np.round(y / size, 9))
    if levels.size == y.size or levels.size < 2:
        return 0.0
    gaps = np.diff(levels)
    smallest = float(gaps.min())
    for parts in range(1, _MAX_QUANTUM_PARTS + 1):
        # each gap's whole number of candidate quanta, then the quantum they fit best (least
        # squares: the smallest gap's own rounding error, times a gap of 70 quanta, would
        # otherwise push a large gap off the lattice)
        counts = np.round(gaps * parts / smallest)
        quantum = float(gaps @ counts / (counts @ counts))
        if np.all(np.abs(gaps - counts * quantum) <= _LATTICE_TOLERANCE * quantum):
            return quantum * size
    return 0.0


_MAX_QUANTUM_PARTS = 20  # the quantum may be the smallest gap seen over up to 20
_LATTICE_TOLERANCE = 0.01  # a gap this close (in quanta) to a whole number of quanta is on it
