"""Learning-rate schedule: where the current phase began and whether a decay is still ahead."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScheduleState", "read_schedule"]


@dataclass(frozen=True)
class ScheduleState:
    """What the logged learning rate says about the run's schedule.

    Attributes:
        known: a learning rate was logged.
        phase_start: index of the first check of the current phase (after the last drop).
        current: the latest learning rate; ``peak`` the largest seen.
        constant: the rate never changed.
        warming_up: the rate rose over the latest checks.
        decay_pending: the rate has been changing (a schedule is active) and is still above
            ``high_fraction`` of its peak, so a decay will likely come and break a plateau.
        drops: how many drops (by more than ``drop_ratio`` between two checks) were seen.
    """

    known: bool
    phase_start: int
    current: float
    peak: float
    constant: bool
    warming_up: bool
    decay_pending: bool
    drops: int

    def describe(self) -> str:
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
) -> ScheduleState:
    """Read the schedule from the learning rate logged at each check (NaN where not logged).

    A drop is a check where the rate fell below ``drop_ratio`` times the previous one (step
    decay, reduce-on-plateau); the curve after the last drop is judged on its own. A smooth decay
    (cosine, linear, exponential) has no single drop but a falling rate: while it is still above
    ``high_fraction`` of its peak, a plateau is likely to break as it falls.
    Assumes the rate is a positive number; a schedule that raises the rate again (cyclic,
    warm restarts) makes ``decay_pending`` true whenever the rate is high.
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
    drops = np.flatnonzero(ratios < drop_ratio)
    phase_start = int(idx[drops[-1] + 1]) if drops.size else 0
    current, peak = float(v[-1]), float(v.max())
    constant = bool(np.all(v == v[0]))
    warming_up = bool(v.size >= 2 and v[-1] > v[-2])
    decay_pending = (not constant) and current > high_fraction * peak
    return ScheduleState(True, phase_start, current, peak, constant, warming_up, decay_pending,
                         int(drops.size))
