"""Forecast: an ensemble of parametric learning-curve families with a prediction interval."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import ndtri

__all__ = ["CurveFit", "ForecastResult", "curve_fit_from_dict", "curve_fit_to_dict",
           "fit_learning_curve"]


def _pow3(t: np.ndarray, c: float, a: float, alpha: float) -> np.ndarray:
    return c + a * t ** (-alpha)


def _exp3(t: np.ndarray, c: float, a: float, b: float) -> np.ndarray:
    return c + a * np.exp(-b * t)


def _logpower(t: np.ndarray, c: float, a: float, b: float, alpha: float) -> np.ndarray:
    return c + a / (1.0 + (t / math.exp(b)) ** alpha)


# name -> (function, initial guess from (first, last), lower bounds, upper bounds)
_FAMILIES: dict[str, tuple[Callable[..., np.ndarray], Callable[[float, float], list[float]],
                           list[float], list[float]]] = {
    "pow3": (_pow3, lambda z0, z1: [z1 - 0.1, max(z0 - z1, 1e-3), 0.5],
             [-np.inf, 0.0, 0.01], [np.inf, np.inf, 5.0]),
    "exp3": (_exp3, lambda z0, z1: [z1 - 0.05, max(z0 - z1, 1e-3) * 2.0, 3.0],
             [-np.inf, 0.0, 1e-3], [np.inf, np.inf, 100.0]),
    "logpower": (_logpower, lambda z0, z1: [z1 - 0.1, max(z0 - z1, 1e-3) * 2.0, -1.0, 1.0],
                 [-np.inf, 0.0, -10.0, 0.05], [np.inf, np.inf, 10.0, 10.0]),
}


@dataclass(frozen=True)
class ForecastResult:
    """Predicted value of the curve at ``step`` with a ``level`` prediction interval."""

    step: float
    value: float
    low: float
    high: float
    level: float
    models: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class _Member:
    name: str
    params: np.ndarray
    cov: np.ndarray
    bic: float


@dataclass(frozen=True)
class CurveFit:
    """Learning-curve families fitted to one curve, in normalised coordinates.

    Steps are mapped to ``t = (step - origin) / span_x`` and values to
    ``z = (value - y_ref) / span_y``, so the fit is the same for any affine rescaling of the metric.
    """

    members: tuple[_Member, ...]
    origin: float
    span_x: float
    y_ref: float
    span_y: float
    noise: float
    n: int

    def predict(self, step: float, level: float = 0.9, inflation: float = 1.0) -> ForecastResult:
        """Ensemble prediction at ``step``.

        The members are weighted by BIC (``exp(-BIC/2)``). The predictive variance is the weighted
        parameter variance of each member at ``step`` (delta method), plus the spread between
        members, plus the noise of one check; its square root is multiplied by ``inflation``.
        """
        t = max((step - self.origin) / self.span_x, 1e-9)
        bics = np.array([m.bic for m in self.members])
        w = np.exp(-0.5 * (bics - bics.min()))
        w /= w.sum()
        preds, variances = [], []
        for m in self.members:
            func = _FAMILIES[m.name][0]
            p = float(func(np.array([t]), *m.params)[0])
            grad = np.empty(m.params.size)
            for k in range(m.params.size):
                h = 1e-6 * max(1.0, abs(m.params[k]))
                q = m.params.copy()
                q[k] += h
                grad[k] = (float(func(np.array([t]), *q)[0]) - p) / h
            var = float(grad @ m.cov @ grad)
            preds.append(p)
            variances.append(var if math.isfinite(var) and var >= 0 else p * p)
        preds_a = np.array(preds)
        mean = float(w @ preds_a)
        var = float(w @ (np.array(variances) + (preds_a - mean) ** 2)) + self.noise**2
        z = float(ndtri(0.5 + level / 2.0)) * math.sqrt(var) * inflation
        scale = self.span_y
        return ForecastResult(
            float(step), mean * scale + self.y_ref, (mean - z) * scale + self.y_ref,
            (mean + z) * scale + self.y_ref, level, tuple(m.name for m in self.members),
            tuple(float(v) for v in w),
        )


def fit_learning_curve(
    steps: np.ndarray, values: np.ndarray, *, max_points: int = 100, noise: float = 0.0,
) -> CurveFit | None:
    """Fit power-law, exponential and log-power families (Domhan et al. 2015) to a curve.

    The curve is loss-like (lower is better) and decreasing families are fitted (``a >= 0``):
    a forecast of where improvement saturates, not of overfitting. At most ``max_points``
    evenly spaced points are used, so the cost does not grow with the history. Returns ``None``
    when fewer than 5 finite points are given or no family converges.

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
    if n > max_points:
        idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
        x, y = x[idx], y[idx]
    spacing = float(np.median(np.diff(x)))
    origin = float(x[0]) - spacing
    span_x = float(x[-1]) - origin
    y_ref = float(np.median(y[-3:]))
    span_y = float(np.max(y) - np.min(y))
    if not span_y > 0:
        span_y = 1.0
    t = (x - origin) / span_x
    z = (y - y_ref) / span_y
    z0, z1 = float(np.median(z[:3])), float(np.median(z[-3:]))
    members = []
    for name, (func, guess, lower, upper) in _FAMILIES.items():
        p0 = np.clip(guess(z0, z1), np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, cov = curve_fit(func, t, z, p0=p0, bounds=(lower, upper), maxfev=400)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        resid = z - func(t, *params)
        rss = float(resid @ resid)
        if not math.isfinite(rss):
            continue
        k = params.size
        bic = t.size * math.log(max(rss / t.size, 1e-300)) + k * math.log(t.size)
        if not np.all(np.isfinite(cov)):
            cov = np.zeros((k, k))
        members.append(_Member(name, params, cov, bic))
    if not members:
        return None
    return CurveFit(tuple(members), origin, span_x, y_ref, span_y, noise / span_y, n)


def curve_fit_to_dict(fit: CurveFit) -> dict:
    """A JSON-safe form of a fit, so a resumed advisor predicts exactly as before."""
    return {
        "members": [{"name": m.name, "params": m.params.tolist(), "cov": m.cov.tolist(),
                     "bic": m.bic} for m in fit.members],
        "origin": fit.origin, "span_x": fit.span_x, "y_ref": fit.y_ref, "span_y": fit.span_y,
        "noise": fit.noise, "n": fit.n,
    }


def curve_fit_from_dict(data: dict) -> CurveFit:
    """The inverse of :func:`curve_fit_to_dict`."""
    members = tuple(_Member(m["name"], np.asarray(m["params"], dtype=float),
                            np.asarray(m["cov"], dtype=float), float(m["bic"]))
                    for m in data["members"])
    return CurveFit(members, float(data["origin"]), float(data["span_x"]), float(data["y_ref"]),
                    float(data["span_y"]), float(data["noise"]), int(data["n"]))
