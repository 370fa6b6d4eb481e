"""Learning-rate schedule: where the current phase began and whether a decay is still ahead."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScheduleState", "read_schedule"]


@dataclass(frozen=True)
class ScheduleState:
    """What the logged learning rate says about the run's schedule.

    Attributes:
        known: the schedule is known: a learning rate was logged and has changed (a rate that
            has stayed constant so far says nothing about the decays to come, so it counts as
            unknown; a plan, see :mod:`advisor.detectors.plan`, makes a constant rate known).
        phase_start: index of the first check of the current phase (after the last drop).
        current: the latest learning rate; ``peak`` the largest seen.
        constant: the rate never changed.
        warming_up: the rate rose over the latest checks.
        decay_pending: the rate has been changing (a schedule is active), is still above
            ``high_fraction`` of its peak and, for a smooth decay with a budget, is still early
            in it or would at least halve again before it ends at its current pace: a decay
            will likely come and break a plateau.
        drops: how many drops (by more than ``drop_ratio`` between two checks) were seen.
        starts, ratios: per drop, the index of the first check after it (the start of the
            phase it began) and the rate's ratio across it.
    """

    known: bool
    phase_start: int
    current: float
    peak: float
    constant: bool
    warming_up: bool
    decay_pending: bool
    drops: int
    starts: tuple[int, ...] = ()
    ratios: tuple[float, ...] = ()

    def describe(self) -> str:
        if self.constant and not self.known:
            return (f"the learning rate has been constant at {self.current:.3g} so far; with no "
                    f"plan, its schedule is unknown")
        if not self.known:
            return "the learning-rate schedule is unknown (no learning rate in the history)"
        if self.constant:
            return f"the learning rate is constant at {self.current:.3g}"
        if self.warming_up:
            return f"the learning rate is still warming up ({self.current:.3g})"
        share = self.current / self.peak if self.peak > 0 else float("nan")
        text = f"the learning rate is {share:.0%} of its peak ({self.current:.3g})"
        if self.drops:
            text += f" after {self.drops} drop{'s' if self.drops > 1 else ''}"
        return text


_UNKNOWN = ScheduleState(False, 0, float("nan"), float("nan"), False, False, False, 0)


def read_schedule(
    lr: np.ndarray | None, *, drop_ratio: float = 0.7, high_fraction: float = 0.1,
    steps: np.ndarray | None = None, max_steps: float | None = None,
    pending_ratio: float = 0.5, early_fraction: float = 0.25, planned: bool = False,
) -> ScheduleState:
    """Read the schedule from the learning rate logged at each check (NaN where not logged).

    A drop is a check where the rate fell below ``drop_ratio`` times the previous one after a steady
    stretch (step decay, reduce-on-plateau; not the tail of a cosine, which falls by a growing share
    at every check); the curve after the last drop is judged on its own. A smooth decay (cosine,
    linear, exponential) has no single drop but a falling rate: while it is still above
    ``high_fraction`` of its peak, a plateau is likely to break as it falls. With the checks'
    ``steps`` and the budget ``max_steps``, a slow smooth decay that will not go far is told apart:
    past the first ``early_fraction`` of the budget, a decay with no drop so far is pending only if
    continuing the latest checks' pace (linearly or geometrically, whichever falls further) takes
    the rate below ``pending_ratio`` of its current value by the budget's end. A cosine or linear
    decay to zero qualifies from about 12% of its length on (earlier, ``early_fraction`` covers it);
    an exponential decay of a few percent over the whole run does not, so a plateau under it can be
    a stop. A step schedule (a drop seen) is assumed to have more drops to come while the rate is
    high, since its pace between drops says nothing.
    Assumes the rate is a positive number; a schedule that raises the rate again (cyclic,
    warm restarts) makes ``decay_pending`` true whenever the rate is high. A rate that has not
    changed yet is an *unknown* schedule (``known`` false), unless ``planned``: the rates are
    the plan's, known before training (then the plan, not this reading, says what is pending).
    """
    if lr is None:
        return _UNKNOWN
    r = np.asarray(lr, dtype=float)
    ok = np.isfinite(r) & (r > 0)
    if not ok.any():
        return _UNKNOWN
    idx = np.flatnonzero(ok)
    v = r[idx]
    ratios = v[1:] / v[:-1]
    # a drop is a step down from a steady rate (the tail of a smooth decay falls by a larger
    # share at every check, and is one phase)
    steady = np.r_[True, ratios[:-1] >= 0.9] if ratios.size else ratios.astype(bool)
    drops = np.flatnonzero((ratios < drop_ratio) & steady)
    phase_start = int(idx[drops[-1] + 1]) if drops.size else 0
    current, peak = float(v[-1]), float(v.max())
    constant = bool(np.all(v == v[0]))
    warming_up = bool(v.size >= 2 and v[-1] > v[-2])
    decay_pending = (not constant) and current > high_fraction * peak
    if decay_pending and not drops.size and steps is not None and max_steps is not None \
            and v.size >= 3:  # a smooth decay: its pace says how far it goes
        x = np.asarray(steps, dtype=float)[idx]
        early = x[-1] - x[0] < early_fraction * (max_steps - x[0])
        decay_pending = early or _pace_ratio(v, x, max_steps) < pending_ratio
    return ScheduleState(planned or not constant, phase_start, current, peak, constant,
                         warming_up, decay_pending, int(drops.size),
                         tuple(int(i) for i in idx[drops + 1]),
                         tuple(float(q) for q in ratios[drops]))


def _pace_ratio(v: np.ndarray, x: np.ndarray, max_steps: float) -> float:
    """The rate at ``max_steps`` over the current one if the latest checks' decay goes on:
    the further fall of a linear and a geometric continuation (1.0: no decay ahead)."""
    k = min(5, v.size)
    dx, left = float(x[-1] - x[-k]), float(max_steps - x[-1])
    if dx <= 0 or left <= 0:
        return 1.0
    linear = max(v[-1] + (v[-1] - v[-k]) / dx * left, 0.0) / v[-1]
    with np.errstate(over="ignore", under="ignore"):
        geometric = float(np.exp(np.log(v[-1] / v[-k]) / dx * left))
    return min(linear, geometric, 1.0)
