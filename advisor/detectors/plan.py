"""The learning-rate plan: the rates a schedule will give, known before training, and what a
plateau means against the decays still ahead.

Two kinds of plan:

- :class:`LrPlan`: the rate at each step of the run, from its start to the budget (what a
  ``torch.optim.lr_scheduler`` will give; the Lightning callback computes it from the trainer's
  schedulers, ``advisor replay`` reads it from a ``planned_lr`` metric).
- :class:`PlateauRule`: ``ReduceLROnPlateau``, whose future is not fixed but follows a known rule:
  while the rate is above ``min_lr``, a plateau of ``patience`` checks brings a reduction by
  ``factor``.

:func:`read_plan` says whether a decay that matters is still ahead of a check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..history import step_text
from .plateau import hidden_change

__all__ = ["LrPlan", "PlanState", "PlateauRule", "frequent_drops_start", "plan_from_dict",
           "plan_to_dict", "read_plan"]


@dataclass(frozen=True)
class LrPlan:
    """The learning rate the optimizer will have at each step, known before the steps happen.

    ``rates[i]`` is the rate the run trains with at ``steps[i]`` (in the advisor's step unit:
    the rate of epoch ``steps[i]`` when checks are per epoch). Between and beyond the planned
    steps the rate of the latest planned step holds.

    Example:
        >>> plan = LrPlan.from_mapping({1: 0.1, 50: 0.01, 75: 0.001})
        >>> plan.rate_at(60), plan.rate_at(100)
        (0.01, 0.001)
    """

    steps: tuple[float, ...]
    rates: tuple[float, ...]
    source: str = ""  # where it came from, for the evidence ("MultiStepLR", "planned_lr")

    def __post_init__(self) -> None:
        steps = np.asarray(self.steps, dtype=float)
        rates = np.asarray(self.rates, dtype=float)
        if steps.ndim != 1 or steps.shape != rates.shape or steps.size == 0:
            raise ValueError(f"an LrPlan needs as many steps as rates (at least one), but got "
                             f"{steps.size} step(s) and {rates.size} rate(s).")
        if not (np.all(np.isfinite(steps)) and np.all(np.isfinite(rates))):
            raise ValueError("an LrPlan's steps and rates must be finite numbers.")
        if np.any(rates < 0):
            raise ValueError(f"learning rates cannot be negative, but the plan has "
                             f"{float(rates.min())!r}.")
        if np.any(np.diff(steps) <= 0):
            raise ValueError("an LrPlan's steps must be strictly increasing.")
        object.__setattr__(self, "steps", tuple(float(s) for s in steps))
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))

    @classmethod
    def from_mapping(cls, rates: Mapping[float, float], source: str = "") -> LrPlan:
        """A plan from ``{step: rate}`` (steps in any order)."""
        items = sorted((float(k), float(v)) for k, v in rates.items())
        return cls(tuple(k for k, _ in items), tuple(v for _, v in items), source)

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The steps and rates as arrays, made once (a plan is read at every check)."""
        return np.asarray(self.steps, dtype=float), np.asarray(self.rates, dtype=float)

    @functools.cached_property
    def _raised(self) -> np.ndarray:
        """:meth:`raised` at each planned step, in one pass: a raised phase begins where the rate
        reaches twice its lowest point since the last raised phase, and ends where it falls
        below half the phase's peak."""
        out = np.zeros(len(self.rates), dtype=bool)
        low, peak = math.inf, None
        for i, rate in enumerate(self.rates):
            if peak is not None:
                peak = max(peak, rate)
                if rate < 0.5 * peak:
                    peak, low = None, rate
            if peak is None:
                low = min(low, rate)
                if rate > low and rate >= 2.0 * low:
                    peak = rate
            out[i] = peak is not None
        return out

    def _index(self, steps: np.ndarray) -> np.ndarray:
        """The latest planned step at or before each of ``steps`` (the first before the plan)."""
        s = self._arrays[0]
        return np.clip(np.searchsorted(s, steps, side="right") - 1, 0, s.size - 1)

    def rates_at(self, steps: np.ndarray | Sequence[float]) -> np.ndarray:
        """The planned rate at each of ``steps`` (the latest planned step at or before it; the
        first planned rate before the plan starts)."""
        return self._arrays[1][self._index(np.asarray(steps, dtype=float))]

    def rate_at(self, step: float) -> float:
        return float(self.rates_at([step])[0])

    def raised(self, step: float) -> bool:
        """Whether ``step`` lies in the high-rate part of a rise of the rate: a warm-up, a
        one-cycle ramp or a warm restart took the rate to at least twice its lowest point since
        the last such rise ended, and it has not fallen below half that rise's peak since.

        Example:
            >>> restart = LrPlan.from_mapping({1: 0.1, 10: 0.001, 11: 0.1, 15: 0.04})
            >>> restart.raised(12), restart.raised(15), restart.raised(5)
            (True, False, False)
        """
        return bool(self._raised[self._index(np.array([float(step)]))[0]])

    def ahead(self, step: float, end: float | None) -> str:
        """What the plan holds after ``step`` up to ``end``: ``"restart"`` (the rate at least
        doubles over its lowest point on the way, a warm restart or a warm-up), ``"decay"`` (it
        at least halves) or ``"none"``.

        Example:
            >>> LrPlan.from_mapping({1: 0.1, 50: 0.01}).ahead(10, 100)
            'decay'
        """
        now = self.rate_at(step)
        s, r = self._arrays
        later = (s > step) & (s <= (np.inf if end is None else end))
        rates = np.concatenate([[now], r[later]])
        low = np.minimum.accumulate(rates)
        if np.any((rates >= 2.0 * low) & (rates > low)):
            return "restart"
        return "decay" if now > 0 and rates.min() <= 0.5 * now else "none"

    def merged(self, later: LrPlan) -> LrPlan:
        """This plan up to where ``later`` starts, then ``later`` (a plan made again mid-run:
        after a resume or when the schedule was changed)."""
        start = later.steps[0]
        keep = [(s, r) for s, r in zip(self.steps, self.rates, strict=True) if s < start]
        steps, rates = later.steps, later.rates
        if keep and len(steps) > 1 and rates[0] == keep[-1][1]:  # no change where it joins
            steps, rates = steps[1:], rates[1:]
        elif keep and len(steps) == 1 and rates[0] == keep[-1][1]:
            steps, rates = (), ()
        return LrPlan(tuple(s for s, _ in keep) + steps, tuple(r for _, r in keep) + rates,
                      later.source or self.source)


@dataclass(frozen=True)
class PlateauRule:
    """``ReduceLROnPlateau``'s rule: after ``patience`` checks without improvement (and
    ``cooldown`` checks after a reduction), the rate is multiplied by ``factor``, never below
    ``min_lr``."""

    factor: float
    patience: int
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8
    source: str = "ReduceLROnPlateau"

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), but got {self.factor!r}.")
        if self.patience < 0 or self.cooldown < 0 or self.min_lr < 0:
            raise ValueError(f"patience, cooldown and min_lr cannot be negative, but got "
                             f"{self.patience!r}, {self.cooldown!r} and {self.min_lr!r}.")

    def at_floor(self, rate: float) -> bool:
        """Whether a reduction would no longer change ``rate`` (it sits at ``min_lr``)."""
        return rate - max(rate * self.factor, self.min_lr) <= self.eps


def plan_to_dict(plan: LrPlan | PlateauRule | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    if isinstance(plan, LrPlan):
        return {"kind": "fixed", "steps": list(plan.steps), "rates": list(plan.rates),
                "source": plan.source}
    return {"kind": "on_plateau", "factor": plan.factor, "patience": plan.patience,
            "cooldown": plan.cooldown, "min_lr": plan.min_lr, "eps": plan.eps,
            "source": plan.source}


def plan_from_dict(state: Mapping[str, Any] | None) -> LrPlan | PlateauRule | None:
    if state is None:
        return None
    kind = state.get("kind")
    if kind == "fixed":
        return LrPlan(tuple(state["steps"]), tuple(state["rates"]), state.get("source", ""))
    if kind == "on_plateau":
        return PlateauRule(float(state["factor"]), int(state["patience"]),
                           int(state.get("cooldown", 0)), float(state.get("min_lr", 0.0)),
                           float(state.get("eps", 1e-8)), state.get("source", "ReduceLROnPlateau"))
    raise ValueError(f"unknown learning-rate plan kind {kind!r} (expected 'fixed' or "
                     f"'on_plateau').")


@dataclass(frozen=True)
class PlanState:
    """What the plan says at one check.

    Attributes:
        pending: a decay that matters is still ahead, so a plateau now is not the end.
        current: the rate at this check.
        next_step, next_rate: where the first decay that matters lands and the rate then
            (``None`` when none is ahead, or for a :class:`PlateauRule`, whose next reduction
            has no fixed step).
        last_decay_step: the latest check at least a window ago whose rate was at least
            ``1 / pending_ratio`` times the current one (for a :class:`PlateauRule`, the check
            before its latest reduction); ``None`` if the rate has not fallen that far yet.
        last_decay_gain: how much the level of the metric (a median of recent checks) fell
            from before ``last_decay_step`` to now.
        reason: a sentence saying why a decay is or is not pending.
    """

    pending: bool
    current: float
    next_step: float | None
    next_rate: float | None
    last_decay_step: float | None
    last_decay_gain: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _gain_after(x: np.ndarray, y: np.ndarray, split: float, k: int) -> float:
    """How much the level of ``y`` fell after ``split``: the median of the last ``k`` checks
    up to it minus the median of the last ``k`` checks (medians, not minima: the minimum of
    more noisy checks falls by itself). ``x`` is increasing."""
    return float(_gains_after(x, y, np.array([split], dtype=float), k)[0])


def _gains_after(x: np.ndarray, y: np.ndarray, splits: np.ndarray, k: int) -> np.ndarray:
    """:func:`_gain_after` at each of ``splits`` (NaN where no check lies on one side)."""
    idx = np.searchsorted(x, splits, side="right")
    out = np.full(idx.size, np.nan)
    ok = (idx > 0) & (idx < x.size)
    if not ok.any():
        return out
    now = float(np.median(y[-k:]))
    windows = np.lib.stride_tricks.sliding_window_view(y, min(k, y.size))
    full = ok & (idx >= k) & (idx <= x.size - k)  # k checks before, the last k after
    if full.any():
        out[full] = np.median(windows[idx[full] - k], axis=1) - now
    for j in np.flatnonzero(ok & ~full):  # near either end: the checks there are
        i = int(idx[j])
        out[j] = float(np.median(y[max(0, i - k):i]) - np.median(y[max(i, x.size - k):]))
    return out


def read_plan(
    plan: LrPlan | PlateauRule,
    x: np.ndarray,
    y: np.ndarray,
    *,
    tolerance: float,
    max_steps: float | None,
    logged_lr: np.ndarray | None = None,
    pending_ratio: float = 0.5,
    min_checks: int = 6,
    unit: str = "step",
    noise: float = 0.0,
    resolution: float = 0.0,
) -> PlanState:
    """Is a decay of the learning rate that matters still ahead of the latest check ``x[-1]``?
    (The sentence names the steps in ``unit``: ``"epoch"`` where they are epochs.)

    Algorithm. A decay *ahead* is a planned rate, before the budget ``max_steps``, at most
    ``pending_ratio`` times the current one (the rate at least halves). It *matters* unless
    the decays already seen stopped paying: the latest check at least ``min_checks`` checks
    ago whose rate was ``1 / pending_ratio`` times the current one or more marks the last
    decay; if the level of ``y`` (lower is better; the median of ``min_checks`` checks) fell by
    less than ``tolerance`` from before it to now, the next decay of that size is not expected
    to bring more either. "Less" is read with the noise: two medians of ``k`` checks differ by
    chance with a standard error of about ``noise * sqrt(pi / k)``, so a decay has stopped
    paying only when its gain plus 1.645 such errors (one-sided 95%) is below ``tolerance``; on a
    noisy curve a decay that paid is not mistaken for one that did not. A quantized metric
    (``resolution``, its quantum: accuracy on a small validation set) adds the change its rounding
    may hide (:func:`~advisor.detectors.plateau.hidden_change`, as the plateau test does): tied
    checks before and after a decay say its gain was below a quantum, not zero. A run whose rate has
    not decayed yet (constant so far, warm-up) has shown nothing, so a decay ahead matters.

    For a :class:`PlateauRule` (``ReduceLROnPlateau``) the decay ahead is the reduction a
    plateau brings, unless the rate sits at ``min_lr`` or fewer than ``patience + 1`` checks
    remain in the budget; it has stopped paying when the improvement after the latest
    reduction with ``patience + 1`` checks after it (read from ``logged_lr``, the rate logged at
    each check) is below ``tolerance``: a reduction younger than that (a short patience reduces
    again as soon as it may) is expected to pay as little. ``details["flat_since"]`` then names
    the check before the earliest of the reductions that, with all those since, brought less than
    ``tolerance``: the curve has been one flat stretch since, and the advisor tests it as one
    phase (each reduction would otherwise start a phase, and a patience shorter than the plateau
    window leaves none long enough to test).

    Assumptions and when it is wrong: a decay helps about as much as the previous one of the same
    size. It waits too long on runs where only the last decay of a schedule matters little (the
    remaining budget is then small), and stops too early where a decay brings a gain after a flat
    stretch that the previous one did not (rare; grokking-like curves). Cyclic schedules and warm
    restarts: with a rise of the rate ahead, the anneal after it is the decay that matters; it is
    awaited unless the last restart (from the check before it to now) brought less than
    ``tolerance``; a run before its first restart waits for it. A plan the user changes mid-run is
    only known once the callback reads it again.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    step = float(x[-1])
    end = math.inf if max_steps is None else float(max_steps)
    if isinstance(plan, PlateauRule):
        return _read_rule(plan, x, y, tolerance=tolerance, end=end, logged_lr=logged_lr,
                          k=min_checks, unit=unit, noise=noise, resolution=resolution)

    rates = plan.rates_at(x)
    current = float(rates[-1])
    s, r = plan._arrays
    ahead = (s > step) & (s <= end)
    low = np.flatnonzero(ahead & (r <= pending_ratio * current))
    details: dict[str, Any] = {"source": plan.source, "current": current}
    rise = np.flatnonzero(ahead & (r >= current / pending_ratio))
    if rise.size and current > 0:  # a warm restart (or a warm-up) is ahead: a new anneal
        return _read_restart(x, y, rates, float(s[rise[0]]), float(r[rise[0]]), current,
                             tolerance, pending_ratio, min_checks, details, unit, noise,
                             resolution)
    if not low.size or current <= 0:
        rest = r[ahead]
        details["min_ahead"] = float(rest.min()) if rest.size else None
        return PlanState(False, current, None, None, None, None,
                         f"the planned rate stays at {current:.3g} or above half of it to the "
                         f"end of the budget", details)
    next_step, next_rate = float(s[low[0]]), float(r[low[0]])
    factor = next_rate / current
    lowers = (f"the schedule lowers the rate from {current:.3g} to {next_rate:.3g} "
              f"(x{factor:.2g}) at {unit} {step_text(next_step)}")
    details.update(next_step=next_step, next_rate=next_rate)
    high = np.flatnonzero(rates[: max(0, x.size - min_checks)] >= current / pending_ratio)
    if not high.size:
        return PlanState(True, current, next_step, next_rate, None, None,
                         f"{lowers}, the first decay of this size in the run", details)
    return _paid(x, y, float(x[high[-1]]), current, next_step, next_rate, tolerance, min_checks,
                 details, lowers, f"the last decay of this size (after {unit}", noise, resolution)


def _margin(noise: float, k: int, resolution: float = 0.0) -> float:
    """One-sided 95% error of a difference of two medians of ``k`` checks (noise ``noise``),
    plus, for a quantized metric, the change its rounding may hide (:func:`hidden_change`: up
    to one quantum when the checks sit on one level, next to nothing when noise dithers them)."""
    return 1.645 * noise * math.sqrt(math.pi / max(k, 1)) + hidden_change(resolution, noise)


def _paid(x: np.ndarray, y: np.ndarray, last: float, current: float, at: float, to: float,
          tolerance: float, min_checks: int, details: dict[str, Any], ahead: str,
          what: str, noise: float = 0.0, resolution: float = 0.0) -> PlanState:
    """Pending unless the level of ``y`` fell by significantly less than the tolerance since
    ``last`` (the check before the last decay or restart of the size ahead): the change ahead is
    expected to pay as it did."""
    gain = _gain_after(x, y, last, min_checks)
    margin = _margin(noise, min_checks, resolution)
    details.update(last_decay_step=last, last_decay_gain=gain, tolerance=tolerance,
                   gain_margin=margin)
    if gain >= tolerance:
        return PlanState(True, current, at, to, last, gain,
                         f"{ahead}, and {what} {step_text(last)}) brought {gain:.3g}", details)
    if not gain + margin < tolerance:  # NaN (no checks to compare) waits too
        return PlanState(True, current, at, to, last, gain,
                         f"{ahead}, and {what} {step_text(last)}) brought {gain:.3g}, within the "
                         f"noise (+-{margin:.3g}) of the {tolerance:.3g} worth training for",
                         details)
    return PlanState(False, current, at, to, last, gain,
                     f"{ahead}, but {what} {step_text(last)}) brought only {gain:.3g}, less than "
                     f"the {tolerance:.3g} worth training for even with its noise (+-{margin:.3g})",
                     details)


def _leading(mask: np.ndarray) -> int:
    """How many entries of ``mask`` are true before its first false one."""
    return int(mask.size if mask.all() else np.argmin(mask))


def frequent_drops_start(x: np.ndarray, y: np.ndarray, starts: Sequence[int],
                         ratios: Sequence[float], *, tolerance: float, k: int = 6,
                         shortest: int = 8, noise: float = 0.0,
                         resolution: float = 0.0) -> int:
    """The first check of the stretch a plateau test may take as one phase, read from the
    logged rate's drops alone (``starts``: the first check after each drop; ``ratios``: the
    rate's ratio across it, as :class:`~advisor.detectors.schedule.ScheduleState` has them),
    when the drops come too often for any phase to be tested on its own.

    Algorithm: walking back from the latest drop, a drop is merged into the phase before it
    when that phase is shorter than ``shortest`` checks (the plateau window and its
    confirmation: a scheduler lowers the rate every few flat checks, as ReduceLROnPlateau with
    a short patience does) and the drop did not pay: with ``k`` checks after it, the level of
    ``y`` (lower is better; medians of ``k`` checks) fell by significantly less than
    ``tolerance`` from before it to now, read with the noise as :func:`read_plan` does; with
    fewer, the drop before it did not pay and it is no deeper (the next decay of a size is
    expected to pay as the last one did). Drops with a phase long enough to test before them
    (a step schedule's) are left as they are.

    Wrong when: a frequent drop pays after earlier ones did not (rare), or pays only after
    more than ``k`` checks.
    """
    n = x.size
    st = np.asarray(starts, dtype=int)
    if not st.size:
        return 0
    rt = np.asarray(ratios, dtype=float)
    begins = np.r_[0, st]  # phase starts: before the first drop, and after each
    short = np.diff(begins) < shortest  # the phase each drop ended was too short to test
    walk = np.arange(st.size - 1, -1, -1)
    if n - st[-1] < k:  # too young to judge: expected to pay as the one before it did
        if st.size < 2 or rt[-1] < rt[-2] or n - st[-2] < k or not short[-1]:
            return int(st[-1])
        walk = walk[1:]
    unpaid = (_gains_after(x, y, x[st[walk] - 1], k) + _margin(noise, k, resolution)
              < tolerance) & short[walk]
    run = _leading(unpaid)
    if not run:  # the latest judged drop paid (or ended a phase long enough to test)
        return int(st[-1])
    return int(begins[int(walk[run - 1])])


def _read_restart(x: np.ndarray, y: np.ndarray, rates: np.ndarray, at: float, to: float,
                  current: float, tolerance: float, pending_ratio: float, min_checks: int,
                  details: dict[str, Any], unit: str = "step", noise: float = 0.0,
                  resolution: float = 0.0) -> PlanState:
    """A rise of the rate ahead (warm restarts, a cyclic schedule, a warm-up still going): the
    anneal after it is the decay that matters, and the last restart says whether one pays."""
    raises = (f"the schedule raises the rate from {current:.3g} to {to:.3g} at {unit} "
              f"{step_text(at)} "
              f"and anneals it again")
    details.update(next_step=at, next_rate=to, restart=True)
    up = np.flatnonzero(rates[1:] >= rates[:-1] / pending_ratio)
    up = up[up < x.size - min_checks]  # a restart with a window of checks after it
    if not up.size:
        return PlanState(True, current, at, to, None, None,
                         f"{raises}; no restart has been seen yet", details)
    # the last check before the latest restart
    return _paid(x, y, float(x[up[-1]]), current, at, to, tolerance, min_checks, details,
                 raises, f"the last restart (after {unit}", noise, resolution)


def _read_rule(rule: PlateauRule, x: np.ndarray, y: np.ndarray, *, tolerance: float, end: float,
               logged_lr: np.ndarray | None, k: int, unit: str = "step",
               noise: float = 0.0, resolution: float = 0.0) -> PlanState:
    details: dict[str, Any] = {"source": rule.source, "factor": rule.factor,
                               "patience": rule.patience, "min_lr": rule.min_lr}
    lr = None if logged_lr is None else np.asarray(logged_lr, dtype=float)
    ok = np.zeros(x.size, bool) if lr is None else np.isfinite(lr) & (lr > 0)
    if not ok.any():
        return PlanState(True, float("nan"), None, None, None, None,
                         f"{rule.source} will lower the rate x{rule.factor:g} after "
                         f"{rule.patience} flat checks (the rate is not logged, so its "
                         f"reductions cannot be followed)", details)
    xs, rates = x[ok], lr[ok]
    current = float(rates[-1])
    details["current"] = current
    if rule.at_floor(current):
        return PlanState(False, current, None, None, None, None,
                         f"{rule.source} has brought the rate down to its min_lr "
                         f"({current:.3g}): no reduction is left", details)
    spacing = float(np.median(np.diff(x[-64:]))) if x.size > 1 else 1.0  # recent checks
    checks_left = (end - x[-1]) / spacing if spacing > 0 else math.inf
    if checks_left < rule.patience + 1:
        return PlanState(False, current, None, None, None, None,
                         f"{rule.source} needs {rule.patience + 1} flat checks to lower the rate, "
                         f"and only {checks_left:.0f} remain in the budget", details)
    falls = np.flatnonzero(rates[1:] < rates[:-1] * (1 - 1e-9))
    lowers = f"{rule.source} lowers the rate x{rule.factor:g} after {rule.patience} flat checks"
    if not falls.size:
        return PlanState(True, current, None, None, None, None,
                         f"{lowers} and has not reduced it yet", details)
    # the latest reduction with patience + 1 checks after it is the one judged: one younger
    # than that (a short patience reduces again as soon as it may) is expected to pay as little
    befores = xs[falls]  # the last check at the old rate, per reduction
    judged = befores[x.size - np.searchsorted(x, befores, side="right") >= rule.patience + 1]
    if not judged.size:
        last = float(befores[-1])
        since = int(np.sum(x > last))
        details.update(last_decay_step=last, checks_since=since)
        return PlanState(True, current, None, None, last, None,
                         f"{lowers}, and the last reduction (after {unit} {step_text(last)}) has "
                         f"had only {since} check(s)", details)
    last = float(judged[-1])
    gain = _gain_after(x, y, last, k)
    since = int(np.sum(x > last))
    later = int(np.sum(befores > last))  # reductions since, too young to judge
    margin = _margin(noise, k, resolution)
    details.update(last_decay_step=last, last_decay_gain=gain, checks_since=since,
                   later_reductions=later, tolerance=tolerance, gain_margin=margin)
    which = f"the last reduction (after {unit} {step_text(last)})" if not later else \
        (f"the last reduction old enough to judge (after {unit} {step_text(last)}; {later} more "
         f"since, too recent to judge)")
    if not gain + margin < tolerance:
        said = (f"{which} brought {gain:.3g}"
                + ("" if gain >= tolerance else f", within the noise (+-{margin:.3g}) of the "
                                                f"{tolerance:.3g} worth training for"))
        return PlanState(True, current, None, None, last, gain, f"{lowers}, and {said}", details)
    # the reductions before it that, with all since, brought as little: the curve has been
    # one flat stretch since the check before the earliest of them
    earlier = befores[befores < last][::-1]
    run = _leading(_gains_after(x, y, earlier, k) + margin < tolerance)  # to the first that paid
    details["flat_since"] = float(earlier[run - 1]) if run else last
    return PlanState(False, current, None, None, last, gain,
                     f"{lowers}, but {which} brought only "
                     f"{gain:.3g} in {since} checks, less than the {tolerance:.3g} worth "
                     f"training for: reductions have stopped paying", details)
