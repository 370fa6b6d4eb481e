"""Turn detector results into :class:`Evidence` with sentences a person can read.

Detectors work on loss-like values (lower is better); ``sign`` is -1 for ``mode="max"``, so
values and slopes are shown back in the metric's own units and direction.
"""

from __future__ import annotations

from .advice import Evidence, Forecast
from .detectors import (
    DivergenceResult,
    OverfittingResult,
    PlateauResult,
    ScheduleState,
)


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def plateau_evidence(r: PlateauResult, monitor: str, sign: float, confidence: float) -> Evidence:
    t = r.trend
    lo, hi = sorted((sign * t.low_slope, sign * t.high_slope))
    summary = (
        f"over the last {t.n} checks (steps {r.window_start:g}-{r.window_end:g}) {monitor} moved "
        f"{sign * t.slope:+.3g} per step ({confidence:.0%} interval {lo:+.3g} to {hi:+.3g}, "
        f"Mann-Kendall p={t.pvalue:.2g}); the budget left is worth about "
        f"{r.projected_gain:.3g} more (at most {r.projected_gain_high:.3g}) against "
        f"{r.tolerance:.3g} worth training for"
    )
    return Evidence(
        "plateau", summary, statistic=t.statistic, pvalue=t.pvalue, interval=(lo, hi),
        window=(r.window_start, r.window_end), noise_scale=r.noise_scale,
        details={"state": r.state.value, "slope": sign * t.slope, "n": t.n,
                 "autocorrelation": t.autocorrelation, "horizon_steps": r.horizon,
                 "projected_gain": r.projected_gain, "projected_gain_high": r.projected_gain_high,
                 "tolerance": r.tolerance},
    )


def overfitting_evidence(r: OverfittingResult, monitor: str, train_metric: str | None,
                         best_step: float, step: float, noise: float) -> Evidence:
    rise = r.rise
    if rise is None:
        summary = f"{monitor} is at or near its best (step {best_step:g})"
    else:
        summary = (
            f"{monitor} is {r.gap:.3g} worse than at its best (step {best_step:g}) over the "
            f"{rise.n} checks since (Mann-Whitney p={r.pvalue:.2g}, rising trend "
            f"p={rise.pvalue_increasing:.2g}); Prechelt's GL={r.generalization_loss:.3g}"
        )
        if train_metric is None:
            summary += "; no training metric given, so this is validation-only evidence"
        elif r.train_trend is not None:
            state = "still improving" if r.train_improving else "not improving"
            summary += (f", PQ={r.progress_quotient:.3g}; {train_metric} is {state} "
                        f"(p={r.train_trend.pvalue_decreasing:.2g})")
    return Evidence(
        "overfitting", summary, statistic=r.statistic, pvalue=r.pvalue,
        window=(best_step, step), noise_scale=noise,
        details={"overfitting": r.overfitting, "gap": r.gap, "tolerance": r.tolerance,
                 "generalization_loss": r.generalization_loss,
                 "progress_quotient": r.progress_quotient,
                 "rise_pvalue": None if rise is None else rise.pvalue_increasing,
                 "train_improving": r.train_improving},
    )


def divergence_evidence(r: DivergenceResult, monitor: str, last_value: float, step: float,
                        sign: float) -> Evidence:
    if r.kind == "non-finite":
        summary = f"{monitor} is {last_value} at step {step:g} ({r.checks} check(s) in a row)"
    elif r.kind == "blow-up":
        summary = (f"{monitor} has been {r.statistic:.3g} times its usual scale ({r.scale:.3g}) "
                   f"away from its best for {r.checks} checks")
    else:
        summary = f"{monitor} is finite and within {r.statistic:.3g} scales of its best"
    return Evidence("divergence", summary, statistic=r.statistic,
                    details={"diverged": r.diverged, "kind": r.kind,
                             "threshold": sign * r.threshold, "scale": r.scale})


def schedule_evidence(s: ScheduleState) -> Evidence:
    return Evidence("schedule", s.describe(),
                    details={"known": s.known, "constant": s.constant, "current": s.current,
                             "peak": s.peak,
                             "drops": s.drops, "decay_pending": s.decay_pending,
                             "warming_up": s.warming_up})


def to_forecast(r: Forecast, sign: float) -> Forecast:
    """The detector's forecast (lower is better) in the metric's own direction."""
    low, high = sorted((sign * r.low, sign * r.high))
    return Forecast(r.step, sign * r.value, low, high, r.level, r.models, r.weights)


def forecast_evidence(f: Forecast, gain: float, gain_interval: tuple[float, float],
                      monitor: str) -> Evidence:
    summary = (f"{monitor} is forecast at {_g(f.value)} by step {f.step:g} ({f.level:.0%} interval "
               f"{_g(f.low)} to {_g(f.high)}, {'+'.join(f.models)}); expected gain over the best "
               f"so far {gain:.3g} ({gain_interval[0]:.3g} to {gain_interval[1]:.3g})")
    return Evidence("forecast", summary, interval=(f.low, f.high),
                    details={"value": f.value, "step": f.step, "expected_gain": gain})
