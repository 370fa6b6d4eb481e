"""Turn detector results into :class:`Evidence` with sentences a person can read.

Detectors work on loss-like values (lower is better); ``sign`` is -1 for ``mode="max"``, so
values and slopes are shown back in the metric's own units and direction.
"""

from __future__ import annotations

import math

from .advice import Evidence, Forecast
from .detectors import (
    DivergenceResult,
    OverfittingResult,
    PlateauResult,
    ScheduleState,
)
from .detectors.plan import PlanState
from .detectors.promise import PeerResult
from .history import step_text


def _g(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _hidden_words(r: PlateauResult) -> str:
    """What the quantization of the metric may hide, for the plateau's sentence."""
    if not r.resolution > 0:
        return ""
    if r.hidden >= 0.01 * r.resolution:
        if r.resolution > r.tolerance:
            return (f"; it moves in steps of {r.resolution:.3g}, more than the "
                    f"{r.tolerance:.3g} worth training for, and up to {r.hidden:.2g} per window "
                    f"may be hidden: a chance of up to {r.jump_chance:.2g} of one more step")
        return (f"; it moves in steps of {r.resolution:.3g}, so up to {r.hidden:.2g} per window "
                f"may be hidden")
    return (f"; it moves in steps of {r.resolution:.3g}, which its noise ({r.noise_scale:.2g}) "
            f"smooths over")


def percent(level: float) -> str:
    """A confidence level as a percentage with the digits that tell it from 100%: "95%",
    "99.92%", "99.995%" (a level shared over a thousand looks is not "100%")."""
    pct = 100.0 * level
    if not 0.0 < pct < 100.0:
        return f"{pct:g}%"
    decimals = max(0, math.ceil(round(-math.log10(100.0 - pct), 6)))
    return f"{pct:.{decimals}f}%"


def plateau_evidence(r: PlateauResult, monitor: str, sign: float, confidence: float,
                     unit: str = "step") -> Evidence:
    t = r.trend
    lo, hi = sorted((sign * t.low_slope, sign * t.high_slope))
    summary = (
        f"over the last {r.checks or t.n} checks ({unit}s "
        f"{step_text(r.window_start)}-{step_text(r.window_end)}"
        + (f", tested as the means of {t.n} blocks of them" if r.checks else "")
        + f") {monitor} "
        f"moved {sign * t.slope:+.3g} per {unit} ({percent(confidence)} interval {lo:+.3g} to "
        f"{hi:+.3g}, Mann-Kendall p={t.pvalue:.2g}"
        + _hidden_words(r)
        + f"); the budget left is worth about {r.projected_gain:.3g} more (at most "
        f"{r.projected_gain_high:.3g}) against {r.tolerance:.3g} worth training for"
    )
    return Evidence(
        "plateau", summary, statistic=t.statistic, pvalue=t.pvalue, interval=(lo, hi),
        window=(r.window_start, r.window_end), noise_scale=r.noise_scale,
        details={"state": r.state.value, "slope": sign * t.slope, "n": t.n,
                 "checks": r.checks or t.n,
                 "autocorrelation": t.autocorrelation, "horizon_steps": r.horizon,
                 "projected_gain": r.projected_gain, "projected_gain_high": r.projected_gain_high,
                 "tolerance": r.tolerance, "resolution": r.resolution, "hidden": r.hidden,
                 "jump_chance": r.jump_chance},
    )


def worse_word(sign: float) -> str:
    """How a metric moves when it gets worse: a loss rises, an accuracy falls."""
    return "rising" if sign > 0 else "falling"


def overfitting_evidence(r: OverfittingResult, monitor: str, train_metric: str | None,
                         best_step: float, step: float, noise: float, unit: str = "step", *,
                         best_check: float | None = None, sign: float = 1.0) -> Evidence:
    """``best_step`` is the smoothed best the tests start from; ``best_check`` the best check
    itself (the checkpoint to keep), named too when it is another one. ``sign`` is -1 for a
    metric where higher is better (the result is loss-like): its rise is told as a fall."""
    rise = r.rise
    worse = worse_word(sign)
    where = f"{unit} {step_text(best_step)}"
    if best_check is not None and best_check != best_step:
        where += f", around the best check at {unit} {step_text(best_check)}"
    if rise is None and r.gap > r.tolerance and r.pvalue < 0.05:
        summary = (f"{monitor} is {r.gap:.3g} worse than around its smoothed best ({where}) "
                   f"over the {r.checks_since_best} checks since (Mann-Whitney "
                   f"p={r.pvalue:.2g}; too few checks yet for a trend test)")
    elif rise is None:
        summary = f"{monitor} is at or near its smoothed best ({where})"
    else:
        verb = f"is {worse}" if r.overfitting else f"is not {worse} significantly"
        summary = (
            f"{monitor} {verb} since its smoothed best ({where}): "
            f"{sign * r.rise_size:+.3g} over the {rise.n} checks tested ({worse} trend "
            f"p={rise.pvalue_increasing:.2g}), now {r.gap:.3g} worse than the best against "
            f"{r.tolerance:.3g} that matters"
        )
        # Prechelt's quotients are defined for a positive error (a loss), not for accuracy
        gl = r.generalization_loss
        if math.isfinite(gl):
            summary += f"; Prechelt's GL={gl:.3g}"
        if train_metric is None:
            summary += "; no training metric given, so this is validation-only evidence"
        elif r.train_trend is not None:
            state = "still improving" if r.train_improving else "not improving"
            pq = r.progress_quotient
            if math.isfinite(gl) and not math.isnan(pq):
                summary += f", PQ={pq:.3g}"
            summary += f"; {train_metric} is {state} (p={r.train_trend.pvalue_decreasing:.2g})"
    return Evidence(
        "overfitting", summary, statistic=r.statistic, pvalue=r.pvalue,
        window=(best_step, step), noise_scale=noise,
        details={"overfitting": r.overfitting, "gap": r.gap, "tolerance": r.tolerance,
                 "generalization_loss": r.generalization_loss,
                 "progress_quotient": r.progress_quotient,
                 "rise_pvalue": None if rise is None else rise.pvalue_increasing,
                 "train_improving": r.train_improving, "onset": r.onset,
                 "rise": r.rise_size},
    )


def divergence_evidence(r: DivergenceResult, monitor: str, last_value: float, step: float,
                        sign: float, unit: str = "step") -> Evidence:
    if r.kind == "non-finite":
        summary = (f"{monitor} is {last_value} at {unit} {step_text(step)} ({r.checks} check(s) "
                   f"in a row)")
    elif r.kind == "blow-up":
        summary = (f"{monitor} has been {r.statistic:.3g} times its usual scale ({r.scale:.3g}) "
                   f"away from its best for {r.checks} checks")
    else:
        summary = f"{monitor} is finite and within {r.statistic:.3g} scales of its best"
    return Evidence("divergence", summary, statistic=r.statistic,
                    details={"diverged": r.diverged, "kind": r.kind,
                             "threshold": sign * r.threshold, "scale": r.scale})


def schedule_evidence(s: ScheduleState, plan: PlanState | None = None) -> Evidence:
    details = {"known": s.known, "constant": s.constant, "current": s.current, "peak": s.peak,
               "drops": s.drops, "decay_pending": bool(s.decay_pending),
               "warming_up": bool(s.warming_up)}
    if plan is None:
        return Evidence("schedule", s.describe(), details=details)
    details.update(planned=True, decay_pending=bool(plan.pending), plan=dict(plan.details))
    return Evidence("schedule", plan.reason, details=details)


def to_forecast(r: Forecast, sign: float) -> Forecast:
    """The detector's forecast (lower is better) in the metric's own direction."""
    low, high = sorted((sign * r.low, sign * r.high))
    return Forecast(r.step, sign * r.value, low, high, r.level, r.models, r.weights, r.scale,
                    r.calibrated, r.ahead, sign * r.model_value)


def forecast_evidence(f: Forecast, gain: float, gain_interval: tuple[float, float],
                      monitor: str, unit: str = "step") -> Evidence:
    summary = (f"{monitor} is forecast at {_g(f.value)} by {unit} {step_text(f.step)} "
               f"({f.level:.0%} interval {_g(f.low)} to {_g(f.high)}, {'+'.join(f.models)}); "
               f"expected gain over the best so far {gain:.3g} ({gain_interval[0]:.3g} to "
               f"{gain_interval[1]:.3g})")
    return Evidence("forecast", summary, interval=(f.low, f.high),
                    details={"value": f.value, "step": f.step, "expected_gain": gain})


def _rank(n: int) -> str:
    if n == 1:
        return "best"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} best"


def _chance(p: float) -> str:
    return "below 0.001" if p < 0.001 else f"{p:.2g}"


def promise_evidence(p: float, p_forecast: float | None, p_peers: float | None,
                     peers: PeerResult | None, target: float, threshold: float, n_best: int,
                     forecast: Forecast | None, unit: str = "step") -> Evidence:
    """Why a sweep's trial is (un)likely to end better than the ``n_best``-th best finished one.

    One chance is quoted, ``p``, the one the decision compares with the threshold, and the
    estimate it comes from (the trial's forecast or the complete trials) is named; the other
    estimate is described by its facts."""
    aim = f"to end better than {target:.4g} (the {_rank(n_best)} complete trial)"
    peer_facts = forecast_facts = None
    if p_peers is not None and peers is not None:
        peer_facts = (f"it needs {peers.needed:.3g} more, and {peers.gained_enough} of the "
                      f"{peers.peers} complete trials improved that much after {unit} "
                      f"{step_text(peers.step)} (the most: {peers.largest:.3g})")
    if p_forecast is not None and forecast is not None:
        forecast_facts = (f"its forecast is {forecast.value:.4g} at {unit} "
                          f"{step_text(forecast.step)} "
                          f"({forecast.level:.0%} interval {forecast.low:.4g} to "
                          f"{forecast.high:.4g})")
    chance = f"its chance {aim} is {_chance(p)} (threshold {threshold:g})"
    if forecast_facts is not None and (peer_facts is None or p == p_forecast):
        parts = [f"by its forecast, {chance}: {forecast_facts}", peer_facts]
    elif peer_facts is not None:
        parts = [f"by the complete trials, {chance}: {peer_facts}", forecast_facts]
    else:
        parts = [f"the value to beat is {target:.4g} (the {_rank(n_best)} complete trial)"]
    return Evidence(
        "promise", "; ".join(part for part in parts if part),
        statistic=p, pvalue=p,
        interval=None if forecast is None else (forecast.low, forecast.high),
        window=None if peers is None else (peers.step, peers.step),
        details={"probability": p, "forecast_probability": p_forecast,
                 "peer_probability": p_peers, "peers": None if peers is None else peers.peers,
                 "threshold": threshold, "target": target,
                 "predicted_final": None if forecast is None else forecast.value})
