"""What the COMPLETE trials of a study say, cached per trial number and state.

For each finished trial: its best-so-far reported value at every step, and its best. Kept as one
matrix over the union of the trials' steps, so the pruner reads every finished trial's best at a
step in one vectorised lookup. The cache is a pure function of the stored trials (keyed by trial
number and state), so every worker process sharing a study reads the same numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PeerCurves"]


class PeerCurves:
    """The finished trials' best-so-far curves of one study, in the minimising direction."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, float] | None = None  # (study name, sign)
        self._reset()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a cache: rebuilt from the study's storage wherever the pruner goes

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def _reset(self) -> None:
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # number -> (steps, best so far)
        self._grid = np.empty(0)
        self._matrix = np.empty((0, 0))
        self._final = self._last = np.empty(0)
        self._dirty = False

    def sync(self, study_name: str, sign: float, complete: Sequence[Any]) -> None:
        """Take in the COMPLETE trials (FrozenTrials) not seen yet."""
        with self._lock:
            if self._key != (study_name, sign):
                self._reset()
                self._key = (study_name, sign)
            if len(complete) == len(self._rows):
                return  # trials never leave the COMPLETE state
            for t in complete:
                if t.number not in self._rows and t.intermediate_values:
                    steps, values = zip(*sorted(t.intermediate_values.items()), strict=True)
                    best = np.fmin.accumulate(sign * np.asarray(values, float))
                    self._rows[t.number] = (np.asarray(steps, float), best)
                    self._dirty = True

    def best_values(self) -> np.ndarray:
        """Every finished trial's best reported value."""
        with self._lock:
            if self._dirty:
                self._rebuild()
            return self._final.copy()

    def last_step(self) -> float | None:
        """The latest step any finished trial reported."""
        with self._lock:
            if self._dirty:
                self._rebuild()
            return float(self._last.max()) if self._last.size else None

    def at(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """Each finished trial's best by ``step`` and its final best, for those that reported by
        ``step`` and went on past it."""
        with self._lock:
            if self._dirty:
                self._rebuild()
            col = int(np.searchsorted(self._grid, step, side="right")) - 1
            if col < 0:
                return np.empty(0), np.empty(0)
            at_step = self._matrix[:, col]
            keep = np.isfinite(at_step) & (self._last > step)
            return at_step[keep], self._final[keep]

    def _rebuild(self) -> None:
        rows = list(self._rows.values())
        self._dirty = False
        if not rows:
            return
        self._grid = np.unique(np.concatenate([steps for steps, _ in rows]))
        matrix = np.full((len(rows), self._grid.size), np.nan)
        for i, (steps, best) in enumerate(rows):
            idx = np.searchsorted(steps, self._grid, side="right") - 1
            matrix[i] = np.where(idx >= 0, best[np.maximum(idx, 0)], np.nan)
        self._matrix = matrix
        self._final = np.array([best[-1] for _, best in rows])
        self._last = np.array([steps[-1] for steps, _ in rows])
