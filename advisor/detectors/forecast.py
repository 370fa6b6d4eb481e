"""Forecast: an ensemble of parametric learning-curve families with a prediction interval."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from ..advice import Forecast
from ._stats import median

__all__ = ["CONFORMAL_QUANTILES", "CurveFit", "combined_forecast", "conformal_interval",
           "conformal_score", "curve_fit_from_dict", "curve_fit_to_dict", "fit_learning_curve",
           "forecast_scale"]


def _grid(*axes: np.ndarray) -> np.ndarray:
    """All combinations of the shape parameters, one row each."""
    return np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)


def _pow3(t: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return t[None, :] ** (-theta[:, :1])


def _exp3(t: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return np.exp(-theta[:, :1] * t[None, :])


def _logpower(t: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + (t[None, :] / np.exp(theta[:, :1])) ** theta[:, 1:2])


# Each family is ``z = c + a * phi(t; theta)`` with ``a >= 0`` (improvement that saturates):
# linear in (c, a) once the shape ``theta`` is fixed. name -> (phi, grid of theta).
_FAMILIES: dict[str, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], np.ndarray]] = {
    "pow3": (_pow3, _grid(np.geomspace(0.01, 5.0, 48))),
    "exp3": (_exp3, _grid(np.geomspace(1e-3, 100.0, 48))),
    "logpower": (_logpower, _grid(np.linspace(-5.0, 3.0, 24), np.geomspace(0.05, 10.0, 16))),
}


@dataclass(frozen=True)
class _Member:
    name: str
    params: np.ndarray  # (c, a, *theta)
    cov: np.ndarray
    bic: float

    def value(self, t: float, params: np.ndarray | None = None) -> float:
        p = self.params if params is None else params
        phi = _FAMILIES[self.name][0](np.array([t]), p[None, 2:])[0, 0]
        return float(p[0] + p[1] * phi)


@dataclass(frozen=True)
class CurveFit:
    """Learning-curve families fitted to one curve, in normalised coordinates.

    Steps are mapped to ``t = (step - origin) / span_x`` and values to
    ``z = (value - y_ref) / span_y``, so the fit is the same for any affine rescaling of the metric.

    A curve observed with one sign throughout (a loss is positive; so is an accuracy, which the
    advisor sees negated) also gets ``log_fit``: the same families fitted to ``log(|value|)``
    (``log_sign`` is the sign). :meth:`predict` uses it when the fit above would forecast a
    value or an interval of the other sign, which the metric cannot take (a loss forecast at
    -0.05 with an interval from -3.8 to 3.7): the log-space forecast keeps the sign, and its
    interval narrows towards zero as multiplicative noise does.
    """

    members: tuple[_Member, ...]
    origin: float
    span_x: float
    y_ref: float
    span_y: float
    noise: float
    n: int
    log_fit: CurveFit | None = None
    log_sign: float = 0.0

    def predict(self, step: float, level: float = 0.9, extrapolation: float = 0.3,
                exponent: float = 0.8) -> Forecast:
        """Ensemble prediction at ``step``.

        The members are weighted by BIC (``exp(-BIC/2)``). The predictive variance is the weighted
        parameter variance of each member at ``step`` (delta method), plus the spread between
        members, plus the noise of one check, plus the extrapolation error: parametric families
        are misspecified for real curves (late learning, schedules, overfitting), and on real
        curves the error grows with the horizon ratio ``r = (step - last) / (last - origin)`` as
        about ``extrapolation * r ** exponent`` curve ranges (standard deviation).
        """
        forecast = self._predict(step, level, extrapolation, exponent)
        sign, log_fit = self.log_sign, self.log_fit
        if log_fit is None or min(sign * forecast.value, sign * forecast.low,
                                  sign * forecast.high) > 0:
            return forecast
        g = log_fit._predict(step, level, extrapolation, exponent)
        with np.errstate(over="ignore"):
            value, a, b = (float(sign * np.exp(sign * v)) for v in (g.value, g.low, g.high))
        low, high = sorted((a, b))
        return Forecast(float(step), value, low, high, level,
                        tuple(f"log-{m}" for m in g.models), g.weights)

    def _predict(self, step: float, level: float, extrapolation: float,
                 exponent: float) -> Forecast:
        t = max((step - self.origin) / self.span_x, 1e-9)
        bics = np.array([m.bic for m in self.members])
        w = np.exp(-0.5 * (bics - bics.min()))
        w /= w.sum()
        preds, variances = [], []
        for m in self.members:
            p = m.value(t)
            grad = np.empty(m.params.size)
            for k in range(m.params.size):
                h = 1e-6 * max(1.0, abs(m.params[k]))
                q = m.params.copy()
                q[k] += h
                grad[k] = (m.value(t, q) - p) / h
            var = float(grad @ m.cov @ grad)
            preds.append(p)
            variances.append(var if math.isfinite(var) and var >= 0 else p * p)
        preds_a = np.array(preds)
        mean = float(w @ preds_a)
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: an infinite interval
            var = float(w @ (np.array(variances) + (preds_a - mean) ** 2)
                        + np.square(np.float64(self.noise)))
            var += float(np.square(extrapolation * np.float64(max(t - 1.0, 0.0)) ** exponent))
        z = float(ndtri(0.5 + level / 2.0)) * math.sqrt(var)
        scale = self.span_y
        return Forecast(
            float(step), mean * scale + self.y_ref, (mean - z) * scale + self.y_ref,
            (mean + z) * scale + self.y_ref, level, tuple(m.name for m in self.members),
            tuple(float(v) for v in w),
        )


def _fit_family(name: str, t: np.ndarray, z: np.ndarray) -> _Member:
    """Best (c, a >= 0, theta) on the grid by least squares, with its covariance."""
    phi_of, grid = _FAMILIES[name]
    phi = phi_of(t, grid)  # (grid, n)
    n = t.size
    pm = phi.mean(axis=1, keepdims=True)
    zm = z.mean()
    dp = phi - pm
    sxx = np.einsum("gn,gn->g", dp, dp)
    # einsum, not ``@``: a matrix-vector product this size makes OpenBLAS start worker threads
    # that keep spinning after it and take CPU from the training loop (measured: ~10% wall time)
    sxy = np.einsum("gn,n->g", dp, z - zm)
    a = np.where(sxx > 1e-300, sxy / np.where(sxx > 1e-300, sxx, 1.0), 0.0)
    a = np.maximum(a, 0.0)
    c = zm - a * pm[:, 0]
    resid = z[None, :] - c[:, None] - a[:, None] * phi
    rss = np.einsum("gn,gn->g", resid, resid)
    g = int(np.argmin(rss))
    params = np.concatenate(([c[g], a[g]], grid[g]))
    k = params.size
    base = _Member(name, params, np.zeros((k, k)), 0.0)
    jac = np.empty((n, k))
    jac[:, 0] = 1.0
    jac[:, 1] = phi[g]
    for j in range(2, k):
        h = 1e-6 * max(1.0, abs(params[j]))
        q = params.copy()
        q[j] += h
        jac[:, j] = (q[0] + q[1] * phi_of(t, q[None, 2:])[0] - (c[g] + a[g] * phi[g])) / h
    sigma2 = float(rss[g]) / max(n - k, 1)
    try:
        with np.errstate(all="ignore"):
            cov = np.linalg.pinv(jac.T @ jac) * sigma2
    except np.linalg.LinAlgError:  # overflowing values: no parameter variance to report
        cov = base.cov
    bic = n * math.log(max(float(rss[g]) / n, 1e-300)) + k * math.log(n)
    return _Member(name, params, cov if np.all(np.isfinite(cov)) else base.cov, bic)


def fit_learning_curve(
    steps: np.ndarray, values: np.ndarray, *, max_points: int = 100, noise: float = 0.0,
) -> CurveFit | None:
    """Fit power-law, exponential and log-power families (Domhan et al. 2015) to a curve.

    The curve is loss-like (lower is better) and decreasing families ``c + a * phi(t; theta)``
    are fitted (``a >= 0``): a forecast of where improvement saturates, not of overfitting.
    Each family is linear in ``(c, a)`` once its shape ``theta`` is fixed, so it is fitted by
    closed-form least squares over a fixed grid of shapes (variable projection): deterministic,
    no convergence failures, about a millisecond. At most ``max_points`` evenly spaced points are
    used, so the cost does not grow with the history. Returns ``None`` with fewer than 5 points.

    Wrong when: the curve has phases (schedule drops, restarts, double descent); callers fit only
    the segment after the last learning-rate drop.
    """
    x = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    if n < 5:
        return None
    fit = _fit_curve(x, y, max_points, noise)
    sign = 1.0 if np.all(y > 0) else -1.0 if np.all(y < 0) else 0.0
    if fit is None or not sign:
        return fit
    # the same curve in log space, for forecasts that would leave the curve's sign (one noise
    # scale of the values near the end is about noise / level in log units)
    level = median(np.abs(y[-3:]))
    log_fit = _fit_curve(x, sign * np.log(sign * y), max_points, noise / level)
    return fit if log_fit is None else dataclasses.replace(fit, log_fit=log_fit, log_sign=sign)


def _fit_curve(x: np.ndarray, y: np.ndarray, max_points: int, noise: float) -> CurveFit | None:
    n = x.size
    if n > max_points:
        idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
        x, y = x[idx], y[idx]
    spacing = median(np.diff(x))
    origin = float(x[0]) - spacing
    span_x = float(x[-1]) - origin
    y_ref = median(y[-3:])
    # The curve's range, from a start robust to initialisation transients (the median of the
    # first quarter); values far above that start are clipped so they do not drive the fit.
    start = median(y[: max(3, y.size // 4)])
    with np.errstate(over="ignore", invalid="ignore"):
        span_y = float(start - np.min(y))
        if not span_y > 0:
            span_y = float(np.max(y) - np.min(y))
        if not math.isfinite(span_y):
            return None  # values near the float limit: nothing sensible to fit
        if not span_y > 0:
            span_y = 1.0
        y = np.minimum(y, start + span_y)
    t = (x - origin) / span_x
    z = (y - y_ref) / span_y
    members = [_fit_family(name, t, z) for name in _FAMILIES]
    return CurveFit(tuple(members), origin, span_x, y_ref, span_y, noise / span_y, n)


def _json_float(value: Any) -> Any:
    """Floats (and nested lists of them) with NaN and infinities as text (``"inf"``), as
    strict JSON has no other spelling for them; ``float()`` reads them back."""
    if isinstance(value, list):
        return [_json_float(v) for v in value]
    return value if math.isfinite(value) else repr(float(value))


def curve_fit_to_dict(fit: CurveFit) -> dict:
    """A JSON-safe form of a fit (strict JSON: non-finite numbers as text), so a resumed
    advisor predicts exactly as before."""
    return {
        "members": [{"name": m.name, "params": _json_float(m.params.tolist()),
                     "cov": _json_float(m.cov.tolist()), "bic": _json_float(m.bic)}
                    for m in fit.members],
        "origin": _json_float(fit.origin), "span_x": _json_float(fit.span_x),
        "y_ref": _json_float(fit.y_ref), "span_y": _json_float(fit.span_y),
        "noise": _json_float(fit.noise), "n": fit.n,
        "log_fit": None if fit.log_fit is None else curve_fit_to_dict(fit.log_fit),
        "log_sign": fit.log_sign,
    }


def curve_fit_from_dict(data: dict) -> CurveFit:
    """The inverse of :func:`curve_fit_to_dict` (a fit saved before ``log_fit`` existed loads
    without it)."""
    members = tuple(_Member(m["name"], np.asarray(m["params"], dtype=float),
                            np.asarray(m["cov"], dtype=float), float(m["bic"]))
                    for m in data["members"])
    log_fit = data.get("log_fit")
    return CurveFit(members, float(data["origin"]), float(data["span_x"]), float(data["y_ref"]),
                    float(data["span_y"]), float(data["noise"]), int(data["n"]),
                    None if log_fit is None else curve_fit_from_dict(log_fit),
                    float(data.get("log_sign", 0.0)))


# ---------------------------------------------------------------------------- conformal interval
#: The shares of the budget used, and the 5% and 95% quantiles of :func:`conformal_score` at
#: each (three tuples), for each kind of schedule still ahead (``"none"``; ``"decay"``: the
#: planned rate at least halves; ``"restart"``: it at least doubles again). Split conformal
#: calibration on the zoo's tune families (``python -m benchmarks.zoo_forecast --calibrate``,
#: callback configuration: plan, train metric and rate given); never fitted on the holdout.
CONFORMAL_QUANTILES: dict[str, tuple[tuple[float, ...], ...]] = {
    'decay': ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        (-5.7691, -3.2836, -2.3567, -2.251, -1.7344, -1.2737, -1.0185, -0.8649, -0.8038),
        (3.1398, 1.9612, 1.5505, 1.1722, 1.0444, 1.0157, 0.881, 0.9421, 0.8742)),
    'none': ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        (-11.5029, -4.0199, -2.896, -3.9149, -2.7665, -1.8811, -2.0902, -1.5146, -1.1076),
        (5.2343, 3.9949, 3.2105, 2.9192, 2.4545, 1.9517, 1.803, 1.4023, 0.9878)),
    'restart': ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        (-58.7786, -19.764, -29.9926, -4.2216, -6.4655, -3.5101, -2.4266, -6.393, -2.0378),
        (5.2838, 3.3841, 8.4125, 2.7385, 3.8387, 1.6945, 1.6163, 11.424, 3.866)),
}
CONFORMAL_LEVEL = 0.9
_SCALE_FLOOR = 0.01  # the scale is at least 1% of the best value's size


@functools.cache
def _conformal_arrays(ahead: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    table = CONFORMAL_QUANTILES.get(ahead)
    if not table:
        return None
    shares, lows, highs = (np.array(c, dtype=float) for c in table)
    return shares, lows, highs


def forecast_scale(value: float, level: float, best: float, noise: float) -> float:
    """The change a forecast's interval is measured in: the change the forecast still expects
    (``value`` against the current ``level``), plus one noise scale, plus 1% of the best value's
    size (so a flat, quiet curve still gets an interval)."""
    return abs(value - level) + noise + _SCALE_FLOOR * abs(best)


def combined_forecast(value: float, level: float, progress: float,
                      interval: tuple[float, float] | None = None) -> float:
    """The forecast a person reads: the curve models' ``value`` combined with the no-change
    forecast (``level``, the latest checks' median), weighted ``(1 - progress) / 2`` and
    ``(1 + progress) / 2``, and kept within ``interval``.

    Algorithm: a forecast combination (the no-change forecast is the classic partner of a
    model's extrapolation, and a combination is often better than either). The models extrapolate
    the trend of the phase so far; the end of a budget seldom keeps it (schedules anneal the rate,
    curves saturate, validation turns up), so the change they promise comes about half-way early
    in the budget and hardly at all near its end. On the zoo's tune families the weight on the
    models' change that minimises the median error of the final value falls from 0.53 at 10% of
    the budget to 0.23 at 50% and 0 at 90%; ``(1 - progress) / 2`` follows it, and on the holdout
    and the three fresh corpora it lowers the median error at 25%, 50% and 75% of the budget on
    every set (``python -m benchmarks.zoo_forecast``). ``progress`` is the share of the budget
    used (clipped to [0, 1]).

    The interval is not moved: it is calibrated around the models' value (see
    :func:`conformal_interval`), and the combination is clipped into it. The advisor combines
    only a calibrated forecast (the schedule known, as the weights were measured): on the public
    curves, whose schedules it cannot see, the combination was worse than the models' value at
    25% of the budget (median error 13.3% against 10.3% on AlgoPerf, 2.6% against 2.2% on
    TaskSet; ``python -m benchmarks.forecast``), and an uncalibrated forecast keeps the models'
    value and interval.

    Wrong when: the curve keeps its trend to the end (a constant rate far from convergence): the
    combination then forecasts too little change; the interval still holds it.

    >>> combined_forecast(0.2, level=0.5, progress=0.5)
    0.425
    """
    weight = 0.5 * (1.0 - min(max(progress, 0.0), 1.0))
    combined = level + weight * (value - level)
    if interval is not None:
        combined = min(max(combined, interval[0]), interval[1])
    return float(combined)


def _log_space(value: float, scale: float) -> tuple[float, float] | None:
    """(sign, scale relative to the value) when the forecast is read in log space: values of one
    sign, so the interval keeps that sign; ``None`` at zero."""
    if value == 0.0 or not math.isfinite(value):
        return None
    return math.copysign(1.0, value), scale / abs(value)


def conformal_score(truth: float, value: float, scale: float) -> float:
    """How far ``truth`` landed from the forecast ``value``, in units of ``scale`` (loss-like:
    positive means worse than forecast; NaN without a positive scale). Nonzero values are
    compared in log space (relative errors: a loss that falls tenfold is as surprising at 1.0 as
    at 0.01), so the interval built from the score keeps the sign of the values."""
    if not scale > 0 or not math.isfinite(scale):
        return math.nan  # nothing to measure the error in
    logs = _log_space(value, scale)
    if logs is None:
        return (truth - value) / scale
    sign, rel = logs
    ratio = sign * truth / abs(value)
    if ratio <= 0:  # the truth changed sign: as far as the score can say
        return -math.inf if truth < value else math.inf
    return sign * math.log(ratio) / rel


def conformal_interval(value: float, scale: float, progress: float,
                       ahead: str = "none") -> tuple[float, float] | None:
    """The calibrated 90% interval for the value at the budget's end (loss-like values).

    Algorithm: split conformal prediction, normalised by ``scale`` (:func:`forecast_scale`) and
    conditioned on the share of the budget used (``progress``, the quantiles interpolated
    between the calibrated shares) and on what the schedule still holds (``ahead``: ``"none"``,
    ``"decay"`` or ``"restart"``; Mondrian conformal, one table each): the interval is the
    forecast moved by the 5% and 95% quantiles of the scores the tune families' forecasts had at
    that point. Returns ``None`` when there is no table (``"unknown"``: no plan and no rate to
    read; the tables were calibrated knowing the schedule, and on curves whose decays the
    forecast cannot see, such as AlgoPerf's without their rate, they cover only 59-86%).

    Wrong when: a run is unlike every tune family (the coverage is guaranteed only for runs
    exchangeable with those), or the schedule changes against its plan.
    """
    table = _conformal_arrays(ahead)
    if not table or not (math.isfinite(value) and math.isfinite(scale) and scale > 0):
        return None
    shares, lows, highs = table
    logs = _log_space(value, scale)
    bounds = []
    for qs in (lows, highs):
        q = float(np.interp(progress, shares, qs))
        if logs is None:
            bounds.append(value + q * scale)
        else:
            sign, rel = logs
            with np.errstate(over="ignore"):
                bounds.append(float(sign * abs(value) * np.exp(sign * q * rel)))
    low, high = sorted(bounds)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None
