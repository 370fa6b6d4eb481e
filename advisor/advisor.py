"""The :class:`Advisor`: feeds one run's history to the detectors and combines them into advice."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _explain
from .advice import Advice, Evidence, Verdict
from .detectors import (
    detect_divergence,
    detect_overfitting,
    detect_plateau,
    fit_learning_curve,
    read_schedule,
)
from .detectors._stats import median, noise_scale
from .detectors.forecast import CurveFit, curve_fit_from_dict, curve_fit_to_dict
from .detectors.plan import LrPlan, PlanState, PlateauRule, plan_from_dict, plan_to_dict, read_plan
from .detectors.plateau import PlateauState, adaptive_window, remaining_gain_horizon
from .history import MetricHistory

__all__ = ["Advisor", "MetricNotFoundError"]

_LR_NAMES = ("lr", "learning_rate", "learning-rate")


class MetricNotFoundError(KeyError):
    """The monitored metric is not among the metrics logged."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


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
            improvement the run has made so far.
        noise_tolerance: the tolerance is at least this many noise scales (a run that never
            improved has no other scale).
        alpha: significance level of the trend and overfitting tests.
        confidence: level of the slope interval whose optimistic end must promise less than the
            tolerance for a plateau.
        confirm: consecutive checks a plateau must hold before it is a stop (the test runs at
            every check, so a single unlucky window must not end a run).
        window_fraction, min_window, max_window: the plateau window is the latest
            ``window_fraction`` of the current phase, between ``min_window`` and ``max_window``
            checks.
        stall_window: the fewest checks in the window for a stall (no downward trend at all and
            no new best by the tolerance) to count as a plateau; also the fewest checks since
            validation's best for the overfitting onset (no downward trend while the training
            metric still improves significantly).
        min_progress_without_lr: with no learning rate logged and a known budget, a plateau is a
            stop only after this share of ``max_steps``: most schedules (cosine, linear, step)
            decay later and often break an early plateau. Overfitting and divergence stop anytime.
        decay: how fast improvement is assumed to slow down (power-law exponent of the rate);
            larger means less is expected from the rest of the budget.
        forecast_level: coverage of the forecast's prediction interval.
        forecast_extrapolation: extrapolation error of the forecast, in curve ranges per unit of
            horizon ratio (calibrated on real curves; see ``CurveFit.predict``).
        refit_growth: refit the learning-curve forecast when the phase has grown by this factor.
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
        noise_tolerance: float = 0.5,
        alpha: float = 0.05,
        confidence: float = 0.95,
        confirm: int = 2,
        window_fraction: float = 0.35,
        min_window: int = 6,
        max_window: int = 48,
        stall_window: int = 10,
        min_progress_without_lr: float = 0.5,
        decay: float = 1.0,
        forecast_level: float = 0.9,
        forecast_extrapolation: float = 0.3,
        refit_growth: float = 1.25,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name, but got {monitor!r}.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', but got {mode!r}.")
        if max_steps is not None and (isinstance(max_steps, bool) or not (
                isinstance(max_steps, int | float) and max_steps > 0)):
            raise ValueError(f"max_steps must be a positive number or None, but got {max_steps!r}.")
        if min_checks < 3:
            raise ValueError(f"min_checks must be at least 3, but got {min_checks}.")
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), but got {min_improvement}.")
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
        self.monitor = monitor
        self.mode = mode
        self.train_metric = train_metric
        self.max_steps = None if max_steps is None else float(max_steps)
        self.lr_metric = lr_metric
        self.min_checks = int(min_checks)
        self.min_improvement = float(min_improvement)
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
        self.forecast_extrapolation = float(forecast_extrapolation)
        self.refit_growth = float(refit_growth)
        self._sign = 1.0 if mode == "min" else -1.0
        self.history = MetricHistory()
        self._fit: CurveFit | None = None
        self._fit_key: tuple[float, int] | None = None  # (phase start step, points at fit)
        self._prediction: tuple[tuple[int, float], Any] | None = None  # cached per fit and step
        self._advice: Advice | None = None
        self._plateau_run = 0  # consecutive monitor checks judged a plateau
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
        step = state.get("judged_step")
        self._judged_step = None if step is None else float(step)
        if state.get("lr_plan") is not None:
            self.lr_plan = plan_from_dict(state["lr_plan"])
        has_data = len(self.history) and self.history.logged(self.monitor).any()
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
        h = self.history
        sign, monitor = self._sign, self.monitor
        prev_run, prev_step = self._plateau_run, self._judged_step
        self._plateau_run = 0  # stays 0 unless this check is a plateau
        logged = h.logged(monitor)
        x_all = h.steps[logged]
        y_all = sign * h.values(monitor)[logged]
        step = float(x_all[-1])
        self._judged_step = step
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
        noise = noise_scale(y[-4 * self.max_window :])
        # improvement so far, from a reference robust to initialisation transients
        span = max(median(y[: max(3, n // 4)]) - best, 0.0)

        div = detect_divergence(y_all[-3:], scale=max(span, 4.0 * noise), best=best)
        if div.diverged:
            ev = _explain.divergence_evidence(div, monitor, sign * float(y_all[-1]), step, sign)
            return Advice(verdict=Verdict.DIVERGED, should_stop=True, evidence=(ev,),
                          suggested_stop_step=best_step,
                          reason=f"Training diverged: {ev.summary}; keep the checkpoint of step "
                                 f"{best_step:g}.", **base)
        if n < self.min_checks:
            ev = Evidence("history", f"{n} finite check(s) of {monitor}; at least "
                                     f"{self.min_checks} are needed for a verdict",
                          details={"checks": n, "min_checks": self.min_checks})
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=(ev,),
                          reason=f"Too early to judge: only {n} check(s) of {monitor} so far "
                                 f"(need {self.min_checks}).", **base)

        tol = max(self.min_improvement * span, self.noise_tolerance * noise)
        sched, plan = self._schedule(x, y, logged, finite, tol)
        evidence = [_explain.schedule_evidence(sched, plan)]

        phase = np.arange(n) >= sched.phase_start
        xp, yp = x[phase], y[phase]
        forecast = self._forecast(xp, yp, noise)
        gain = gain_iv = None
        if forecast is not None:
            gain = max(0.0, best - sign * forecast.value)
            lo_v, hi_v = sorted((sign * forecast.low, sign * forecast.high))
            gain_iv = (max(0.0, best - hi_v), max(0.0, best - lo_v))
            evidence.append(_explain.forecast_evidence(forecast, gain, gain_iv, monitor))
        base.update(forecast=forecast, expected_gain=gain, expected_gain_interval=gain_iv)

        over = detect_overfitting(
            x, y, tolerance=max(tol, 2.0 * noise), alpha=self.alpha,
            stall_points=self.stall_window,
            train_values=None if self.train_metric is None
            else sign * h.values(self.train_metric)[logged][finite])
        evidence.append(_explain.overfitting_evidence(over, monitor, self.train_metric,
                                                      float(x[over.best_index]), step, noise))
        if over.overfitting:
            stop_at = float(x[over.best_index])
            return Advice(verdict=Verdict.OVERFITTING, should_stop=True, evidence=tuple(evidence),
                          suggested_stop_step=stop_at,
                          reason=f"Overfitting: {evidence[-1].summary}; keep the best checkpoint "
                                 f"(step {best_step:g}).", **base)

        if yp.size < self.min_window:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=tuple(evidence),
                          reason=f"A new phase began at step {xp[0]:g} ({sched.describe()}); "
                                 f"only {yp.size} check(s) since, too few to judge.", **base)
        w = adaptive_window(yp.size, self.window_fraction, self.min_window, self.max_window)
        spacing = median(np.diff(xp)) if xp.size > 1 else 1.0
        # At least the window's own length: a curve still gaining the tolerance per window is
        # not a plateau just because the budget is nearly used up.
        horizon = max(remaining_gain_horizon(step, self.max_steps, float(xp[0]) - spacing,
                                             self.decay), float(xp[w][-1] - xp[w][0]))
        before = yp[: w[0]]
        plateau = detect_plateau(xp[w], yp[w], tolerance=tol, horizon=horizon, noise=noise,
                                 prior_best=float(before.min()) if before.size else None,
                                 stall_points=self.stall_window,
                                 confidence=self.confidence, alpha=self.alpha)
        if plateau.state is PlateauState.PLATEAU:  # a check judged again is not counted twice
            self._plateau_run = (prev_run - 1 if step == prev_step and prev_run else prev_run) + 1
        evidence.append(_explain.plateau_evidence(plateau, monitor, sign, self.confidence))
        evidence = tuple(evidence)
        text = evidence[-1].summary
        if plateau.state is PlateauState.IMPROVING:
            return Advice(verdict=Verdict.IMPROVING, should_stop=False, evidence=evidence,
                          reason=f"Still improving: {text}.", **base)
        if plateau.state is PlateauState.UNDECIDED:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Not clear yet: {text}.", **base)
        if plan is not None and plan.pending:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Flat, but {plan.reason}: wait for it ({text}).", **base)
        if plan is None and (sched.decay_pending or sched.warming_up):
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Flat for now, but {sched.describe()}, so a scheduled decay is "
                                 f"likely to bring more: {text}.", **base)
        progress = None if self.max_steps is None else step / self.max_steps
        if not sched.known and progress is not None and progress < self.min_progress_without_lr:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Flat at {progress:.0%} of the budget, but the learning-rate "
                                 f"schedule is unknown and most schedules decay later, which "
                                 f"often brings more: {text}.", **base)
        if gain_iv is not None and gain_iv[0] > tol:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Flat for now, but the learning-curve forecast expects at least "
                                 f"{gain_iv[0]:.3g} more: {text}.", **base)
        if self._plateau_run < self.confirm:
            return Advice(verdict=Verdict.UNDECIDED, should_stop=False, evidence=evidence,
                          reason=f"Looks flat, to be confirmed at the next check: {text}.", **base)
        best_so_far = np.minimum.accumulate(y)
        stop_at = float(x[int(np.argmax(best_so_far <= best + tol))])
        schedule_note = "" if sched.known else "; the learning-rate schedule is unknown"
        return Advice(verdict=Verdict.PLATEAU, should_stop=True, evidence=evidence,
                      suggested_stop_step=stop_at,
                      reason=f"Plateau: {text}{schedule_note}; best {sign * best:.4g} at step "
                             f"{best_step:g}.", **base)

    def _schedule(self, x: np.ndarray, y: np.ndarray, logged: np.ndarray, finite: np.ndarray,
                  tol: float) -> tuple[Any, PlanState | None]:
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
            return sched, None
        return sched, read_plan(self.lr_plan, x, y, tolerance=tol, max_steps=self.max_steps,
                                logged_lr=logged_lr, min_checks=self.min_window)

    def _forecast(self, x: np.ndarray, y: np.ndarray, noise: float):
        """The forecast at ``max_steps``, refitting only when the phase has grown enough."""
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
        if self._prediction is not None and self._prediction[0] == (id(self._fit), target):
            return self._prediction[1]
        result = self._fit.predict(target, self.forecast_level,
                                   self.forecast_extrapolation)
        forecast = None
        if all(math.isfinite(v) for v in (result.value, result.low, result.high)):
            forecast = _explain.to_forecast(result, self._sign)
        self._prediction = ((id(self._fit), target), forecast)
        return forecast
