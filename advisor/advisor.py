"""The :class:`Advisor`: feeds one run's history to the detectors and combines them into advice."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.special import ndtri

from . import _explain
from .advice import Advice, Evidence, Verdict
from .detectors import (
    PlateauState,
    detect_divergence,
    detect_overfitting,
    detect_plateau,
    fit_learning_curve,
    read_schedule,
)
from .detectors._stats import median, noise_estimate
from .detectors.forecast import (
    CONFORMAL_LEVEL,
    CurveFit,
    combined_forecast,
    conformal_interval,
    curve_fit_from_dict,
    curve_fit_to_dict,
    forecast_scale,
)
from .detectors.overfitting import OverfittingResult
from .detectors.plan import (
    LrPlan,
    PlanState,
    PlateauRule,
    frequent_drops_start,
    plan_from_dict,
    plan_to_dict,
    read_plan,
)
from .detectors.plateau import (
    PlateauResult,
    adaptive_window,
    block_autocorrelation,
    metric_resolution,
    remaining_gain_horizon,
    window_means,
    window_rate_ratio,
)
from .detectors.schedule import ScheduleState
from .history import MetricHistory, check_settings, positive_number, step_text
from .policy import Decision, Findings, decide

__all__ = ["Advisor", "MetricNotFoundError"]

_LR_NAMES = ("lr", "learning_rate", "learning-rate")
_MIN_LOOK_ALPHA = 1e-10  # the most looks an error rate is shared among: 1e10
_NO_OVERFITTING = OverfittingResult(False, 0, math.nan, 1.0, None, 0.0, 0.0, math.nan, math.nan,
                                    None)
_NO_SCHEDULE = ScheduleState(False, 0, math.nan, math.nan, False, False, False, 0)
_STILL = {"decay": ", and the schedule still lowers the rate",
          "restart": ", and the schedule still raises the rate again"}


class MetricNotFoundError(KeyError):
    """The monitored metric is not among the metrics logged."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# metrics named like these, maximised, with every value in [0, 1], cannot exceed 1
_ACCURACY_LIKE = re.compile(r"acc|f1|auc|precision|recall|iou|dice")
_NOISY = 3.0  # checks this many times noisier than the tolerance get a hint in "not clear yet"


def _noisy_hint(noise: float, tol: float) -> str:
    """Why a plateau may stay unclear for long: a tolerance well below the checks' noise needs
    many checks to resolve (the slope interval narrows as the window's length to the 3/2, and
    the gain it projects is at least the window's own: on a flat curve, a window of 48 checks
    resolves about 1.7 noise scales at the level of a run of a few hundred checks)."""
    if not (tol > 0 and noise >= _NOISY * tol):
        return ""
    return (f"; the checks' noise ({noise:.2g}) is {noise / tol:.0f} times the {tol:.3g} worth "
            f"training for, so ruling out a gain that small may take most of the budget (a "
            f"min_delta of about twice the noise, {2 * noise:.2g}, or more validation samples "
            f"would let it decide sooner)")


def _quantum_hint(plateau: PlateauResult | None) -> str:
    """Why a quiet quantized metric stays unclear: one quantum is worth more than the
    tolerance, so any gain is a whole quantum, and the chance of one more is what is left."""
    if plateau is None or not plateau.jump_chance > 0:
        return ""
    return f"; a min_delta of one step ({plateau.resolution:.3g}) would let it decide sooner"


class Advisor:
    """Advice on when to stop one training run, from the history of a monitored metric.

    Example:
        >>> import math
        >>> from advisor import Advisor
        >>> advisor = Advisor(monitor="val_loss", mode="min", max_steps=60)
        >>> for epoch in range(1, 61):
        ...     advice = advisor.update(epoch, {"val_loss": 0.3 + math.exp(-epoch / 4)})
        ...     if advice.should_stop:
        ...         break
        >>> advice.verdict, epoch < 60
        (<Verdict.PLATEAU: 'plateau'>, True)

    Args:
        monitor: the metric to judge, e.g. ``"val_loss"``.
        mode: ``"min"`` if lower is better, ``"max"`` if higher is better (accuracy).
        train_metric: the matching training metric, for overfitting evidence (optional).
        max_steps: the run's budget in the same unit as ``step`` (``max_epochs`` if you pass
            epochs). Without it, the rest of the run is assumed to be as long as what came before.
        lr_metric: the logged learning rate (``"auto"`` finds ``lr``, ``learning_rate`` or
            Lightning's ``lr-<Optimizer>``; ``None`` ignores it).
        lr_plan: the learning rates the schedule will give, known before training: an
            :class:`~advisor.detectors.plan.LrPlan` (or ``{step: rate}``) in the unit of
            ``step``, or a :class:`~advisor.detectors.plan.PlateauRule` for ``ReduceLROnPlateau``
            (see :meth:`set_lr_plan`). With a plan, a plateau while a decay that matters is
            still ahead is not a stop. The Lightning callback reads it from the trainer.
        min_checks: the fewest checks before any statistical verdict (earlier: undecided, never
            a stop, except on NaN/inf).
        min_improvement: the smallest gain worth the remaining budget, as a fraction of the
            best value's size (0.01: a stop may cost at most 1% of the best, the regret the
            benchmarks count).
        min_delta: the smallest gain worth the remaining budget in the metric's own units (as
            Lightning's ``EarlyStopping(min_delta=...)``); the larger of the two counts.
        noise_tolerance: the tolerance is at least this many noise scales (default 0: the
            tolerance is the user's alone; a floor at half the noise let runs whose best is
            small next to their noise stop at a cost many times the best).
        alpha: significance level of the trend and overfitting tests.
        confidence: level of the slope interval whose optimistic end must promise less than the
            tolerance for a plateau.
        confirm: consecutive checks a plateau or overfitting must hold before it is a stop (the
            tests run at every check, so a single unlucky window must not end a run).
        alpha_spending: share each stopping test's error rate (the plateau's
            ``(1 - confidence) / 2``, the overfitting test's ``alpha``) among the checks the
            budget holds (Bonferroni over repeated looks), so that asking at every check keeps
            the chance of a wrong stop over the whole run at most that rate, however many checks
            the run has. ``False``: every look at the nominal level.
        window_fraction, min_window, max_window: the plateau window is the latest
            ``window_fraction`` of the current phase, at least ``min_window`` checks; a window
            of more than ``max_window`` checks is tested as the means of ``max_window``
            consecutive blocks of them (every check counts, at a bounded cost).
        stall_window: the fewest checks of the segment after validation's best that the
            overfitting test needs.
        min_progress_without_lr: with a known budget, a plateau is a stop only after this share
            of ``max_steps`` when the schedule is unknown (no plan, and no logged rate that has
            changed: most schedules decay later and often break an early plateau) or when the
            run has not improved by more than the tolerance since its first checks, beyond the
            luck of its best check (many sit at their initial level before they learn; such a
            run also waits while the schedule still lowers or restarts the rate). Overfitting
            and divergence stop anytime.
        decay: how fast improvement is assumed to slow down (the rate falls like
            ``t ** -(1 + decay)``); larger means less is expected from the rest of the budget.
            0.5 (a ``1 / sqrt(t)`` curve) was chosen on the zoo's tune families: 1.0 (``1 / t``)
            stopped constant-rate runs with more harm than patience 20.
        forecast_level: coverage of the forecast's prediction interval.
        forecast_extrapolation: extrapolation error of the forecast, in curve ranges per unit of
            horizon ratio (calibrated on real curves; see ``CurveFit.predict``).
        forecast_calibration: at ``forecast_level=0.9``, replace the models' own interval by the
            conformal one calibrated on the zoo's tune families (see
            :func:`~advisor.detectors.forecast.conformal_interval`); ``False`` keeps the
            models' interval.
        refit_growth: refit the learning-curve forecast when the phase has grown by this factor.
        unit: what a step counts (``"epoch"`` when steps are epochs), so the reasons say
            "epoch 40" where the tags and tables say epoch.
        best_possible: the best value the monitor can take. Once the best check is within the
            tolerance of it (or reaches it), training on cannot improve the best by more than
            the tolerance, so the run is stopped (verdict plateau, whatever else holds but a
            divergence; at the bound itself, as Lightning's ``stopping_threshold``). ``"auto"``
            (default): 1.0 for a ``mode="max"`` metric named like an accuracy (``acc``, ``f1``,
            ``auc``, ``precision``, ``recall``, ``iou``, ``dice``) whose values all lie in
            [0, 1]; none otherwise. ``None``: no bound.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        train_metric: str | None = None,
        max_steps: float | None = None,
        lr_metric: str | None = "auto",
        *,
        lr_plan: LrPlan | PlateauRule | Mapping[float, float] | None = None,
        min_checks: int = 6,
        min_improvement: float = 0.01,
        min_delta: float = 0.0,
        noise_tolerance: float = 0.0,
        alpha: float = 0.05,
        confidence: float = 0.95,
        confirm: int = 2,
        alpha_spending: bool = True,
        window_fraction: float = 0.35,
        min_window: int = 6,
        max_window: int = 48,
        stall_window: int = 10,
        min_progress_without_lr: float = 0.5,
        decay: float = 0.5,
        forecast_level: float = 0.9,
        forecast_extrapolation: float = 0.3,
        forecast_calibration: bool = True,
        refit_growth: float = 1.25,
        unit: str = "step",
        best_possible: float | str | None = "auto",
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name, but got {monitor!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', but got {mode!r}.")
        if train_metric is not None and (not isinstance(train_metric, str) or not train_metric
                                         or train_metric == monitor):
            raise ValueError(f"train_metric must be the name of a metric other than the monitor "
                             f"{monitor!r}, or None, but got {train_metric!r}.")
        if lr_metric is not None and (not isinstance(lr_metric, str) or not lr_metric):
            raise ValueError(f"lr_metric must be a metric name, 'auto' or None, but got "
                             f"{lr_metric!r}.")
        check_settings(
            integers={"min_checks": min_checks, "confirm": confirm, "min_window": min_window,
                      "max_window": max_window, "stall_window": stall_window},
            reals={"min_improvement": min_improvement, "min_delta": min_delta,
                   "noise_tolerance": noise_tolerance, "alpha": alpha, "confidence": confidence,
                   "window_fraction": window_fraction,
                   "min_progress_without_lr": min_progress_without_lr, "decay": decay,
                   "forecast_level": forecast_level,
                   "forecast_extrapolation": forecast_extrapolation,
                   "refit_growth": refit_growth},
            flags={"alpha_spending": alpha_spending,
                   "forecast_calibration": forecast_calibration})
        if not 0 <= min_progress_without_lr <= 1:
            raise ValueError(f"min_progress_without_lr is a share of the budget, in [0, 1], but "
                             f"got {min_progress_without_lr}.")
        if max_steps is not None and positive_number(max_steps) is None:
            raise ValueError(f"max_steps must be a positive number or None, but got {max_steps!r}.")
        if min_checks < 3:
            raise ValueError(f"min_checks must be at least 3, but got {min_checks}.")
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), but got {min_improvement}.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, int | float) or not (
                min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta must be a non-negative number, but got {min_delta!r}.")
        if noise_tolerance < 0:
            raise ValueError(f"noise_tolerance cannot be negative, but got {noise_tolerance}.")
        if stall_window < 3:
            raise ValueError(f"stall_window must be at least 3, but got {stall_window}.")
        if confirm < 1:
            raise ValueError(f"confirm must be at least 1, but got {confirm}.")
        for name, value in (("alpha", alpha), ("confidence", confidence),
                            ("window_fraction", window_fraction),
                            ("forecast_level", forecast_level)):
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), but got {value}.")
        if not 3 <= min_window <= max_window:
            raise ValueError(
                f"need 3 <= min_window <= max_window, but got {min_window} and {max_window}.")
        if decay <= 0 or forecast_extrapolation < 0 or refit_growth <= 1:
            raise ValueError(
                f"decay must be positive, forecast_extrapolation non-negative and refit_growth "
                f"above 1, but got {decay}, {forecast_extrapolation} and {refit_growth}.")
        if not isinstance(unit, str) or not unit.isidentifier():
            raise ValueError(f"unit must be a word such as 'epoch' or 'step', but got {unit!r}.")
        if not (best_possible is None or best_possible == "auto" or (
                isinstance(best_possible, int | float) and not isinstance(best_possible, bool)
                and math.isfinite(best_possible))):
            raise ValueError(f"best_possible must be a finite number, 'auto' or None, but got "
                             f"{best_possible!r}.")
        self.best_possible = best_possible
        self.monitor = monitor
        self.mode = mode
        self.unit = unit
        self.train_metric = train_metric
        self.max_steps = None if max_steps is None else positive_number(max_steps)
        self.lr_metric = lr_metric
        self.min_checks = int(min_checks)
        self.min_improvement = float(min_improvement)
        self.min_delta = float(min_delta)
        self.alpha_spending = bool(alpha_spending)
        self.noise_tolerance = float(noise_tolerance)
        self.alpha = float(alpha)
        self.confidence = float(confidence)
        self.confirm = int(confirm)
        self.window_fraction = float(window_fraction)
        self.min_window = int(min_window)
        self.max_window = int(max_window)
        self.stall_window = int(stall_window)
        self.min_progress_without_lr = float(min_progress_without_lr)
        self.decay = float(decay)
        self.forecast_level = float(forecast_level)
        self.forecast_calibration = bool(forecast_calibration)
        self.forecast_extrapolation = float(forecast_extrapolation)
        self.refit_growth = float(refit_growth)
        self._sign = 1.0 if mode == "min" else -1.0
        self.history = MetricHistory()
        self._fit: CurveFit | None = None
        self._fit_key: tuple[float, int] | None = None  # (phase start step, points at fit)
        self._prediction: tuple[tuple[int, float], Any] | None = None  # cached per fit and step
        self._advice: Advice | None = None
        self._plateau_run = 0  # consecutive monitor checks judged a plateau
        self._overfit_run = 0  # consecutive monitor checks judged overfitting
        self._judged_step: float | None = None  # the monitor check judged last
        self.lr_plan: LrPlan | PlateauRule | None = None
        self.set_lr_plan(lr_plan)

    # ------------------------------------------------------------------ public API
    @property
    def advice(self) -> Advice | None:
        """The latest advice, or ``None`` before the first update."""
        return self._advice

    def update(self, step: float, metrics: Mapping[str, Any]) -> Advice:
        """Record the metrics logged at ``step`` and return the advice with them.

        Metrics other than the monitored ones are kept too (the learning rate, for instance).
        The advice is about the latest check of the monitor (``advice.step``): call this when
        validation ran, or log other metrics in between and get the advice of the last check.

        Raises:
            MetricNotFoundError: the monitored metric was never logged (lists those that were);
                the values given are recorded first, so nothing is lost.
            TypeError, ValueError: a step or value is not a real number.
        """
        self.history.append(step, metrics)
        if self.monitor not in metrics and not self.history.logged(self.monitor).any():
            present = ", ".join(sorted(self.history.metrics)) or "none"
            raise MetricNotFoundError(
                f"monitored metric {self.monitor!r} is not among the logged metrics: {present}.")
        with np.errstate(all="ignore"):  # overflow near the float range is handled, not news
            self._advice = self._advise()
        return self._advice

    def set_lr_plan(self, plan: LrPlan | PlateauRule | Mapping[float, float] | None) -> None:
        """Set (or replace, or with ``None`` drop) the learning-rate plan.

        Without a plan the schedule is read from the logged rate, and a rate that has not
        changed yet counts as unknown. With an :class:`LrPlan` the plan's rates say where the
        phases are and whether a decay that matters is still ahead (see
        :func:`~advisor.detectors.plan.read_plan`); with a :class:`PlateauRule` the logged rate
        shows the reductions made so far.
        """
        if plan is not None and not isinstance(plan, LrPlan | PlateauRule):
            if not isinstance(plan, Mapping):
                raise TypeError(f"lr_plan must be an LrPlan, a PlateauRule, a mapping of step to "
                                f"rate or None, but got {type(plan).__name__}.")
            plan = LrPlan.from_mapping(plan)
        self.lr_plan = plan

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this advisor is (JSON-safe)."""
        return {
            "version": 2,
            "monitor": self.monitor,
            "mode": self.mode,
            "history": self.history.to_dict(),
            "fit": None if self._fit is None else curve_fit_to_dict(self._fit),
            "fit_key": None if self._fit_key is None else list(self._fit_key),
            "plateau_run": self._plateau_run,
            "overfit_run": self._overfit_run,
            "judged_step": self._judged_step,
            "lr_plan": plan_to_dict(self.lr_plan),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the settings stay those of this instance).

        A state of version 1 (before plans) loads with no plan."""
        if state.get("version") not in (1, 2):
            raise ValueError(f"unknown advisor state version {state.get('version')!r} (this "
                             f"version of training-advisor reads versions 1 and 2).")
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            raise ValueError(
                f"state is for monitor={state.get('monitor')!r}, mode={state.get('mode')!r}, "
                f"but this advisor has monitor={self.monitor!r}, mode={self.mode!r}.")
        self.history = MetricHistory.from_dict(state["history"])
        self._fit = None if state.get("fit") is None else curve_fit_from_dict(state["fit"])
        key = state.get("fit_key")
        self._fit_key = None if key is None else (float(key[0]), int(key[1]))
        self._plateau_run = int(state.get("plateau_run", 0))
        self._overfit_run = int(state.get("overfit_run", 0))
        step = state.get("judged_step")
        self._judged_step = None if step is None else float(step)
        if state.get("lr_plan") is not None:
            self.lr_plan = plan_from_dict(state["lr_plan"])
        has_data = len(self.history) and self.history.logged(self.monitor).any()
        with np.errstate(all="ignore"):
            self._advice = self._advise() if has_data else None

    # ------------------------------------------------------------------ decision
    def _lr_name(self) -> str | None:
        if self.lr_metric != "auto":
            return self.lr_metric
        for name in self.history.metrics:
            if name in _LR_NAMES or name.startswith(("lr-", "lr/", "lr_")):
                return name
        return None

    def _advise(self) -> Advice:
        """Run the detectors on the history, ask the policy, word its decision."""
        h = self.history
        sign, monitor = self._sign, self.monitor
        prev_step = self._judged_step
        logged = h.logged(monitor)
        x_all = h.steps[logged]
        y_all = sign * h.values(monitor)[logged]
        step = float(x_all[-1])
        self._judged_step = step
        again = step == prev_step  # the same check judged again (another metric was logged)
        finite = np.isfinite(y_all)
        x, y = x_all[finite], y_all[finite]
        n = y.size
        base = {"step": step, "monitor": monitor, "mode": self.mode}
        if n == 0:
            return Advice(verdict=Verdict.DIVERGED, should_stop=True,
                          reason=f"{monitor} has never been finite (latest {sign * y_all[-1]}).",
                          **base)
        best_i = int(np.argmin(y))
        best, best_step = float(y[best_i]), float(x[best_i])
        base.update(best_step=best_step, best_value=sign * best)
        # the noise of the recent half of the run: the early fall bends too fast for any
        # detrending of a short history, and would read as noise and autocorrelation
        recent = y[-min(4 * self.max_window, max(12, n - n // 2)):]
        noise, phi = noise_estimate(recent)
        # improvement so far, from a reference robust to initialisation transients
        span = max(median(y[: max(3, n // 4)]) - best, 0.0)
        tol = self.tolerance(sign * best, noise)
        # learned: the best is more than the tolerance below the first checks' level and below
        # some check before it (a run whose best was its first check, worse ever since, has
        # learned nothing, however far its later checks rose above that best), beyond how far
        # below its level the best of n checks falls by noise alone (about the 1 - 1/(n+1)
        # quantile of the noise: a flat, noisy start is not learning)
        luck = noise * float(ndtri(1.0 - 1.0 / (n + 1)))
        learned = span - luck > tol and float(y[: best_i + 1].max()) - best > tol

        # a blow-up is large in the metric's own terms: beyond the improvement so far, the
        # noise, and ten times the tolerance (a slow drift early in a run, at a scale read from
        # a few checks, is not a divergence)
        div = detect_divergence(y_all[-3:], scale=max(span, 4.0 * noise, 10.0 * tol), best=best)
        evidence: list[Evidence] = []
        if div.diverged:
            evidence.append(_explain.divergence_evidence(div, monitor, sign * float(y_all[-1]),
                                                         step, sign, self.unit))
        if div.diverged or n < self.min_checks:
            f = self._findings(n, div, None, None, None, None, None, step, tol, again,
                               learned=learned, ahead=self._ahead(step, _NO_SCHEDULE, None))
            return self._word(decide(f), f, evidence, base, noise=noise)

        # the most the best can still improve: up to the best value the metric can take
        bound = self._bound(y)
        headroom = None if bound is None else max(best - sign * bound, 0.0)

        # a quantized metric (accuracy on a small validation set) moves in steps: its quantum
        resolution = metric_resolution(recent) or metric_resolution(y[-2000:])
        # a check's error: the noise, and the rounding of a quantized value (variance q^2 / 12)
        check_error = math.hypot(noise, resolution / math.sqrt(12.0))
        sched, plan = self._schedule(x, y, logged, finite, tol, check_error, resolution)
        evidence.append(_explain.schedule_evidence(sched, plan))
        phase = np.arange(n) >= sched.phase_start
        xp, yp = x[phase], y[phase]
        ahead = self._ahead(x[-1], sched, plan)
        forecast = self._forecast(xp, yp, noise, best, ahead)
        gain = gain_iv = None
        if forecast is not None:
            forecast = _explain.to_forecast(forecast, sign)
            gain = max(0.0, best - sign * forecast.value)
            lo_v, hi_v = sorted((sign * forecast.low, sign * forecast.high))
            gain_iv = (max(0.0, best - hi_v), max(0.0, best - lo_v))
            evidence.append(_explain.forecast_evidence(forecast, gain, gain_iv, monitor,
                                                       self.unit))
        base.update(forecast=forecast, expected_gain=gain, expected_gain_interval=gain_iv)

        train = None if self.train_metric is None \
            else sign * h.values(self.train_metric)[logged][finite]
        spacing_all = median(np.diff(x)) if n > 1 else 1.0
        over = detect_overfitting(x, y, tolerance=tol,
                                  alpha=self._look_alpha(step, spacing_all, self.alpha,
                                                         float(x[0])),
                                  stall_points=self.stall_window, train_values=train,
                                  autocorrelation=phi)
        evidence.append(_explain.overfitting_evidence(over, monitor, self.train_metric,
                                                      float(x[over.best_index]), step, noise,
                                                      self.unit, best_check=best_step,
                                                      sign=sign))
        plateau = None
        if yp.size >= self.min_window:
            w = adaptive_window(yp.size, self.window_fraction, self.min_window, self.max_window)
            spacing = median(np.diff(xp)) if xp.size > 1 else 1.0
            origin = float(xp[0]) - spacing
            # At least the window's own length: a curve still gaining the tolerance per window
            # is not a plateau just because the budget is nearly used up. The window's slope is
            # its average rate; the horizon is scaled to the rate at its end.
            ratio = window_rate_ratio(float(xp[w][0]), step, origin, self.decay)
            remaining = remaining_gain_horizon(step, self.max_steps, origin, self.decay)
            horizon = max(remaining, float(xp[w][-1] - xp[w][0])) * ratio
            before = yp[: w[0]]
            confidence = self._look_confidence(step, spacing, float(x[0]))
            xw, yw, blocked = window_means(xp, yp, w)
            span = int(w[-1] - w[0] + 1)  # the checks the window covers
            plateau = detect_plateau(xw, yw, tolerance=tol, horizon=horizon, noise=noise,
                                     prior_best=float(before.min()) if before.size else None,
                                     confidence=confidence, alpha=self.alpha,
                                     autocorrelation=block_autocorrelation(phi, span / w.size)
                                     if blocked else phi,
                                     resolution=resolution,
                                     resolution_horizon=remaining * ratio,
                                     steps_left=None if self.max_steps is None
                                     else max(self.max_steps - step, 0.0))
            if blocked:  # the evidence names the checks the window spans, not its blocks
                plateau = replace(plateau, window_start=float(xp[w[0]]),
                                  window_end=float(xp[w[-1]]), checks=span)
            evidence.append(_explain.plateau_evidence(plateau, monitor, sign, confidence,
                                                      self.unit))
        f = self._findings(n, div, over, plateau, sched, plan,
                           None if gain_iv is None else gain_iv[0], step, tol, again,
                           learned=learned, ahead=ahead, headroom=headroom)
        decision = decide(f)
        stop_at = None
        if decision.verdict is Verdict.PLATEAU:
            best_so_far = np.minimum.accumulate(y)
            stop_at = float(x[int(np.argmax(best_so_far <= best + tol))])
        return self._word(decision, f, evidence, base, noise=noise, stop_at=stop_at,
                          over_best=float(x[over.best_index]), bound=bound)

    def tolerance(self, best: float, noise: float = 0.0) -> float:
        """The smallest gain worth the rest of the budget, in the metric's units: ``min_delta``,
        ``min_improvement`` of the best value's size, and ``noise_tolerance`` noise scales,
        whichever is largest."""
        return max(self.min_improvement * abs(best), self.min_delta,
                   self.noise_tolerance * noise)

    def _look_confidence(self, step: float, spacing: float, first: float) -> float:
        """The plateau interval's level at this look. With ``alpha_spending``, the one-sided
        error ``(1 - confidence) / 2`` is shared evenly among the checks the budget holds
        (Bonferroni over the looks), so asking at every check does not raise the chance of a
        wrong stop above it however long the run; without a budget, the run is assumed to go on
        for as long again."""
        return 1.0 - 2.0 * self._look_alpha(step, spacing, (1.0 - self.confidence) / 2.0, first)

    def _look_alpha(self, step: float, spacing: float, alpha: float, first: float) -> float:
        """A test's level at this look: ``alpha`` shared evenly among the checks the budget
        holds (with ``alpha_spending``), so the chance of a wrong stop over the whole run stays
        below ``alpha`` (Bonferroni: valid however the looks depend on each other). The checks
        are counted from the one before the ``first`` (or from step 0, if that is later): steps
        that start at 10**15 hold as many checks as steps that start at 1. At most
        ``1 / _MIN_LOOK_ALPHA`` looks are counted (past that the level would round to 0)."""
        if not self.alpha_spending:
            return alpha
        origin = max(first - spacing, 0.0)
        end = self.max_steps if self.max_steps is not None else step + (step - origin)
        looks = (end - origin) / max(spacing, 1e-12)
        return max(alpha / max(1.0, looks), alpha * _MIN_LOOK_ALPHA)

    def _findings(self, n, div, over, plateau, sched, plan, gain_low, step, tol, again, *,
                  learned, ahead, headroom=None):
        """The detectors' results at this check, with the runs of consecutive checks."""
        over_ok = over is not None and over.overfitting
        flat = plateau is not None and plateau.state is PlateauState.PLATEAU
        # a check judged again (another metric was logged) is not counted twice
        self._overfit_run = (self._overfit_run if again else self._overfit_run + 1) \
            if over_ok else 0
        self._plateau_run = (self._plateau_run if again else self._plateau_run + 1) \
            if flat else 0
        train_rising = bool(over is not None and over.train_trend is not None
                            and over.train_trend.pvalue_increasing < self.alpha)
        # validation going up: since its best (its trend, or while too few checks came after
        # the best for a trend, its latest checks against those around the best), or over the
        # plateau's window
        up_since_best = (over is not None and over.gap > tol
                         and (over.pvalue < self.alpha if over.rise is None
                              else over.rise.pvalue_increasing < self.alpha))
        up_in_window = (plateau is not None and plateau.trend.pvalue_increasing < self.alpha
                        and plateau.trend.slope * (plateau.window_end - plateau.window_start)
                        > tol)  # an effect as well: a rise by more than the tolerance
        rising = bool((up_since_best or up_in_window) and not train_rising)
        progress = None if self.max_steps is None else step / self.max_steps
        return Findings(
            checks=n, min_checks=self.min_checks, divergence=div,
            overfitting=over if over is not None else _NO_OVERFITTING,
            overfitting_run=self._overfit_run, plateau=plateau, plateau_run=self._plateau_run,
            confirm=self.confirm, schedule=sched if sched is not None else _NO_SCHEDULE,
            plan=plan, progress=progress, min_progress_without_lr=self.min_progress_without_lr,
            forecast_gain_low=gain_low, tolerance=tol, rising=rising,
            learned=learned, ahead=ahead, headroom=headroom,
            # read only for a blow-up: no work on the plan at an ordinary check
            rate_raised=div.diverged and isinstance(self.lr_plan, LrPlan)
            and self.lr_plan.raised(step))

    def _word(self, d: Decision, f: Findings, evidence: list[Evidence], base: dict,
                *, noise: float, stop_at: float | None = None,
                over_best: float | None = None, bound: float | None = None) -> Advice:
        """The decision in words: the reason a person reads, with the evidence behind it."""
        monitor = self.monitor
        best_step = base.get("best_step")
        if d.why == "diverged":
            text = evidence[0].summary
            return Advice(verdict=d.verdict, should_stop=True, evidence=tuple(evidence),
                          suggested_stop_step=best_step,
                          reason=f"Training diverged: {text}; keep the checkpoint of "
                                 f"{self.unit} {step_text(best_step)}.", **base)
        if d.why == "spike_at_raised_rate":
            return Advice(verdict=d.verdict, should_stop=False, evidence=tuple(evidence),
                          reason=f"{monitor} jumped ({evidence[0].summary}), but the schedule "
                                 f"raised the learning rate (a warm-up, a one-cycle ramp or a "
                                 f"warm restart), it is still above half its peak and the plan "
                                 f"lowers it later: a raised rate often brings a spike that its "
                                 f"decay takes back. A divergence if it lasts once the rate has "
                                 f"halved.", **base)
        if d.why == "no_headroom":
            best_value, headroom = base["best_value"], f.headroom
            ev = Evidence("bound", f"{monitor} is at {best_value:.4g} ({self.unit} "
                                   f"{step_text(best_step)}), "
                                   f"{headroom:.3g} from {bound:g}, the best it can be",
                          details={"best_possible": bound, "best_step": best_step,
                                   "headroom": headroom, "tolerance": f.tolerance})
            if headroom == 0.0:
                reason = (f"Nothing left to gain: {monitor} reached {best_value:.4g} at "
                          f"{self.unit} {step_text(best_step)}, the best it can be; training on "
                          f"can at most tie it. Keep that checkpoint.")
            else:
                rel = f.tolerance / max(abs(best_value), 1e-300)
                reason = (f"Nothing worth training for: {monitor} is at {best_value:.4g} "
                          f"({self.unit} {step_text(best_step)}), {headroom:.3g} from {bound:g}, "
                          f"the best it can be: less than the {f.tolerance:.3g} ({rel:.1%} of the "
                          f"best) worth training for. Keep that checkpoint.")
            # whatever the forecast says, no more than the headroom can be gained
            capped = dict(base)
            if capped.get("expected_gain") is not None:
                capped["expected_gain"] = min(capped["expected_gain"], headroom)
            if capped.get("expected_gain_interval") is not None:
                capped["expected_gain_interval"] = tuple(
                    min(g, headroom) for g in capped["expected_gain_interval"])
            return Advice(verdict=d.verdict, should_stop=True, evidence=(*evidence, ev),
                          suggested_stop_step=best_step, reason=reason, **capped)
        if d.why == "too_early":
            ev = Evidence("history", f"{f.checks} finite check(s) of {monitor}; at least "
                                     f"{self.min_checks} are needed for a verdict",
                          details={"checks": f.checks, "min_checks": self.min_checks})
            return Advice(verdict=d.verdict, should_stop=False, evidence=(ev,),
                          reason=f"Too early to judge: only {f.checks} check(s) of {monitor} so "
                                 f"far (need {self.min_checks}).", **base)
        over_text = next(e.summary for e in evidence if e.detector == "overfitting")
        plateau_text = evidence[-1].summary if f.plateau is not None else ""
        tol = f.tolerance
        rel = tol / max(abs(base["best_value"]), 1e-300)
        worth = f"{tol:.3g} ({rel:.1%} of the best)"
        worse = _explain.worse_word(self._sign)
        reasons = {
            "overfitting": f"Overfitting: {over_text}; keep the best checkpoint "
                           f"({self.unit} {step_text(best_step)}).",
            "small_rise_before_decay": f"{monitor} is {worse} since its best, but by no more "
                                       f"than twice the {worth} worth training for, and "
                                       f"{self._decay_ahead_text(f)}: a lower rate often takes "
                                       f"a small rise back and goes past the best; wait for "
                                       f"it ({over_text}).",
            "overfitting_unconfirmed": f"{monitor} is {worse} since its best, to be "
                                       f"confirmed at the next check: {over_text}.",
            "new_phase": f"A new phase began after a drop of the learning rate "
                         f"({f.schedule.describe()}); too few checks since to judge.",
            "improving": f"Still improving: {plateau_text}.",
            "unclear": f"Not clear yet: {plateau_text}{_noisy_hint(noise, tol)}"
                       f"{_quantum_hint(f.plateau)}.",
            "decay_planned": f"Flat, but {f.plan.reason if f.plan else ''}: wait for it "
                             f"({plateau_text}).",
            "decay_likely": f"Flat for now, but {f.schedule.describe()}, so a scheduled decay "
                            f"is likely to bring more: {plateau_text}.",
            "schedule_unknown": f"Flat at {f.progress or 0:.0%} of the budget, but the "
                                f"learning-rate schedule is unknown and most schedules decay "
                                f"later, which often brings more: {plateau_text}.",
            "forecast_expects_more": f"Flat for now, but the learning-curve forecast expects at "
                                     f"least {f.forecast_gain_low or 0:.3g} more: "
                                     f"{plateau_text}.",
            "worse_before_learning": f"{monitor} is worse than at its first checks while "
                                     f"training goes on, but at {f.progress or 0:.0%} of the "
                                     f"budget it has not improved by more than {worth} yet: a run "
                                     f"that has learned nothing has nothing to overfit, and many "
                                     f"start slowly ({over_text}).",
            "not_learning_yet": f"Flat at {f.progress or 0:.0%} of the budget, but {monitor} has "
                                f"not improved by more than {worth} since its first checks"
                                f"{_STILL.get(f.ahead, '')}: many runs sit at their initial "
                                f"level before they learn ({plateau_text}).",
            "unconfirmed": f"Looks flat, to be confirmed at the next check: {plateau_text}.",
            "rising": f"Overfitting: {monitor} is {worse} since its best while training went "
                      f"on, and the rest of the budget is unlikely to improve it by more than "
                      f"{worth}: {plateau_text}; keep the best checkpoint ({self.unit} "
                      f"{step_text(best_step)}).",
            "plateau": f"Plateau: training on{self._to_budget()} is unlikely to improve "
                       f"{monitor} by more than {worth}: {plateau_text}"
                       f"{'' if f.schedule.known else '; the learning-rate schedule is unknown'}"
                       f"; best {base['best_value']:.4g} at {self.unit} {step_text(best_step)}.",
        }
        suggested = None
        if d.should_stop:
            suggested = stop_at if d.verdict is Verdict.PLATEAU else best_step
        return Advice(verdict=d.verdict, should_stop=d.should_stop, evidence=tuple(evidence),
                      suggested_stop_step=suggested, reason=reasons[d.why], **base)

    @staticmethod
    def _decay_ahead_text(f: Findings) -> str:
        if f.plan is not None:
            return f.plan.reason
        return f"{f.schedule.describe()}, so a decay is likely ahead"

    def _to_budget(self) -> str:
        return "" if self.max_steps is None else f" to {self.unit} {step_text(self.max_steps)}"

    def _schedule(self, x: np.ndarray, y: np.ndarray, logged: np.ndarray, finite: np.ndarray,
                  tol: float, noise: float, resolution: float = 0.0
                  ) -> tuple[Any, PlanState | None]:
        """The schedule's reading (phases, from the plan's rates when there is a fixed plan,
        else from the logged rate) and, with a plan, whether a decay that matters is ahead."""
        lr_name = self._lr_name()
        logged_lr = None if lr_name is None else self.history.values(lr_name)[logged][finite]
        if isinstance(self.lr_plan, LrPlan):
            sched = read_schedule(self.lr_plan.rates_at(x), steps=x, max_steps=self.max_steps,
                                  planned=True)
        else:
            sched = read_schedule(logged_lr, steps=x, max_steps=self.max_steps,
                                  planned=self.lr_plan is not None)
        if self.lr_plan is None:
            if sched.drops >= 2 and not sched.decay_pending:
                # drops too frequent for any phase to be tested, that changed nothing
                start = frequent_drops_start(x, y, sched.starts, sched.ratios, tolerance=tol,
                                             k=self.min_window,
                                             shortest=self.min_window + self.confirm,
                                             noise=noise, resolution=resolution)
                sched = replace(sched, phase_start=min(sched.phase_start, start))
            return sched, None
        plan = read_plan(self.lr_plan, x, y, tolerance=tol, max_steps=self.max_steps,
                         logged_lr=logged_lr, min_checks=self.min_window, unit=self.unit,
                         noise=noise, resolution=resolution)
        if (isinstance(self.lr_plan, PlateauRule) and not plan.pending
                and "flat_since" in plan.details and logged_lr is not None):
            # reductions that stopped paying changed the rate, not the curve: one phase from
            # the start of the one the earliest of them ended (a patience shorter than the
            # plateau window left every phase too short to test, however long the curve had
            # been flat)
            before = int(np.searchsorted(x, plan.details["flat_since"], side="right"))
            begins = (0, *sched.starts)  # the phases the logged rate's drops began
            start = begins[max(int(np.searchsorted(begins, before, side="left")) - 1, 0)]
            sched = replace(sched, phase_start=min(sched.phase_start, start))
        return sched, plan

    def _bound(self, y: np.ndarray) -> float | None:
        """The best value the monitor can take (see ``best_possible``), in its own terms; ``y``
        is its finite history, loss-like."""
        if self.best_possible != "auto":
            return self.best_possible  # type: ignore[return-value]
        if self.mode != "max" or not _ACCURACY_LIKE.search(self.monitor.lower()):
            return None
        values = -y  # the metric's own values
        return 1.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else None

    def _ahead(self, step: float, sched: ScheduleState, plan: PlanState | None) -> str:
        """What the schedule still holds (for the forecast's calibration and the policy): from
        the plan's rates, else whether a decay is pending (ReduceLROnPlateau's rule, or a logged
        rate that has changed); ``"unknown"`` without a plan or a rate to read."""
        if isinstance(self.lr_plan, LrPlan):
            return self.lr_plan.ahead(step, self.max_steps)
        if plan is None and not sched.known:
            return "unknown"
        pending = plan.pending if plan is not None else sched.decay_pending
        return "decay" if pending else "none"

    def _forecast(self, x: np.ndarray, y: np.ndarray, noise: float, best: float,
                  ahead: str):
        """The forecast at ``max_steps`` (loss-like), refitting only when the phase has grown
        enough. Calibrated (see :func:`conformal_interval`: the schedule is known, the
        interval is the 90% one), its value is combined with the latest checks' level (see
        :func:`combined_forecast`); else the curve models' own value and interval."""
        if self.max_steps is None or y.size < 5:
            return None
        key = (float(x[0]), int(y.size))
        if (self._fit_key is None or self._fit_key[0] != key[0]
                or y.size >= self.refit_growth * self._fit_key[1]):
            self._fit = fit_learning_curve(x, y, noise=noise)
            self._fit_key = key
        if self._fit is None:
            return None
        target = max(self.max_steps, float(x[-1]))
        if self._prediction is None or self._prediction[0] != (id(self._fit), target):
            result = self._fit.predict(target, self.forecast_level,
                                       self.forecast_extrapolation)
            ok = all(math.isfinite(v) for v in (result.value, result.low, result.high))
            self._prediction = ((id(self._fit), target), result if ok else None)
        result = self._prediction[1]
        if result is None:
            return None
        level = median(y[-3:])
        progress = float(x[-1]) / self.max_steps
        scale = forecast_scale(result.value, level, best, noise)
        interval = None
        if self.forecast_calibration and self.forecast_level == CONFORMAL_LEVEL:
            interval = conformal_interval(result.value, scale, progress, ahead)
        if interval is None:  # the models' own forecast, value and interval
            return replace(result, scale=scale, ahead=ahead, model_value=result.value)
        value = combined_forecast(result.value, level, progress, interval)
        return replace(result, value=value, low=interval[0], high=interval[1], scale=scale,
                       calibrated=True, ahead=ahead, model_value=result.value)
