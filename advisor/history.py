"""The metric history of one run: ordered steps and the values logged at each.

Rules for real-world logs:

* Steps are kept in increasing order. A step logged again replaces the earlier values
  (last wins), with one warning per history; a step older than the last is inserted in place.
* A metric missing at a step is NaN there, so validation every k epochs, gaps and metrics that
  start late all fit in one table; :meth:`MetricHistory.logged` tells a logged NaN (divergence)
  from a check where the metric was not logged.
* Values must be real numbers; ``None`` means missing. NaN and infinities are kept as they are
  (the divergence detector needs to see them).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["AdvisorWarning", "MetricHistory", "check_settings", "positive_number", "step_text"]


class AdvisorWarning(UserWarning):
    """A problem the advisor recovered from; the run goes on."""


def _as_float(label: str, value: Any) -> float:
    """``value`` as a float; ``label`` (``"step"``, ``"metric 'x'"``) names it in errors."""
    if value is None:
        return math.nan
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{label} must be a real number, but got {value!r} ({type(value).__name__})."
        )
    try:
        return float(value)
    except OverflowError:  # an integer (or fraction) of more than 308 digits
        raise ValueError(f"{label} must be a finite number, but got an integer beyond the float "
                         f"range ({len(str(int(abs(value))))} digits).") from None


def step_text(step: float) -> str:
    """A step as people write it and as a checkpoint is named: a whole number in full
    (``1234567``, where ``f"{step:g}"`` gives ``1.23457e+06``, another step), anything else to
    ten significant digits.

    Example:
        >>> step_text(1234567.0), step_text(10.0 ** 15 + 5), step_text(2.5), step_text(float("nan"))
        ('1234567', '1000000000000005', '2.5', 'nan')
    """
    x = float(step)
    if math.isfinite(x) and x.is_integer() and abs(x) < 2.0 ** 63:
        return str(int(x))
    return f"{x:.10g}"


def positive_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite positive real number (numpy's included, bools
    not), else ``None``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def check_settings(integers: Mapping[str, Any], reals: Mapping[str, Any],
                    flags: Mapping[str, Any]) -> None:
    """Settings of the right type: whole numbers, finite real numbers and booleans (numpy's
    included), each named with its value when it is not (the ranges are checked after)."""
    for name, value in integers.items():
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and float(value).is_integer()):
            raise TypeError(f"{name} must be a whole number, but got {value!r}.")
    for name, value in reals.items():
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value)):
            raise TypeError(f"{name} must be a finite real number, but got {value!r}.")
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"{name} must be True or False, but got {value!r}.")


class MetricHistory:
    """Steps and metric values of one run, in step order.

    Example:
        >>> h = MetricHistory()
        >>> h.append(1, {"val_loss": 0.9})
        >>> h.append(2, {"val_loss": 0.7, "train_loss": 0.6})
        >>> h.values("val_loss").tolist(), h.values("train_loss").tolist()[1]
        ([0.9, 0.7], 0.6)
    """

    def __init__(self) -> None:
        self._steps = np.empty(16)
        self._columns: dict[str, np.ndarray] = {}
        self._logged: dict[str, np.ndarray] = {}
        self._n = 0
        self._warned_duplicate = False
        self._warned_order = False

    def __len__(self) -> int:
        return self._n

    @property
    def metrics(self) -> list[str]:
        """Names of every metric logged so far."""
        return list(self._columns)

    @property
    def steps(self) -> np.ndarray:
        """The steps, increasing (a read-only view)."""
        view = self._steps[: self._n]
        view.flags.writeable = False
        return view

    def values(self, name: str) -> np.ndarray:
        """The values of one metric at every step (NaN where it was not logged)."""
        if name not in self._columns:
            return np.full(self._n, np.nan)
        view = self._columns[name][: self._n]
        view.flags.writeable = False
        return view

    def logged(self, name: str) -> np.ndarray:
        """Boolean mask: where the metric was logged (NaN values included)."""
        if name not in self._logged:
            return np.zeros(self._n, dtype=bool)
        return self._logged[name][: self._n].copy()

    def append(self, step: float, metrics: Mapping[str, Any]) -> None:
        """Record the metrics logged at ``step``.

        Raises:
            TypeError: a step or a value is not a real number.
            ValueError: the step is not finite.
        """
        step = _as_float("step", step)
        if not math.isfinite(step):
            raise ValueError(f"step must be a finite number, but got {step!r}.")
        row = {str(k): _as_float(f"metric {str(k)!r}", v) for k, v in metrics.items()}
        index = self._position(step)
        for name, value in row.items():
            if name not in self._columns:
                self._columns[name] = np.full(len(self._steps), np.nan)
                self._logged[name] = np.zeros(len(self._steps), dtype=bool)
            self._columns[name][index] = value
            self._logged[name][index] = True

    def _position(self, step: float) -> int:
        """The row for ``step``: the last row, a new one at the end, or one inserted in order."""
        n = self._n
        if n and step <= self._steps[n - 1]:
            index = int(np.searchsorted(self._steps[:n], step))
            if self._steps[index] == step:
                if not self._warned_duplicate:
                    warnings.warn(
                        f"step {step_text(step)} was logged twice; the later values replace the "
                        "earlier ones (warned once per run).",
                        AdvisorWarning,
                        stacklevel=4,
                    )
                    self._warned_duplicate = True
                return index
            if not self._warned_order:
                warnings.warn(
                    f"step {step_text(step)} arrived after step {step_text(self._steps[n - 1])}; "
                    f"it is inserted in "
                    "step order (warned once per run).",
                    AdvisorWarning,
                    stacklevel=4,
                )
                self._warned_order = True
            self._grow()
            self._steps[index + 1 : n + 1] = self._steps[index:n]
            for name, column in self._columns.items():
                mask = self._logged[name]
                column[index + 1 : n + 1] = column[index:n]
                mask[index + 1 : n + 1] = mask[index:n]
                column[index], mask[index] = np.nan, False
            self._steps[index] = step
            self._n += 1
            return index
        self._grow()
        self._steps[n] = step
        self._n += 1
        return n

    def _grow(self) -> None:
        if self._n < len(self._steps):
            return
        size = 2 * len(self._steps)
        self._steps = np.resize(self._steps, size)
        for name, column in self._columns.items():
            grown = np.full(size, np.nan)
            grown[: self._n] = column[: self._n]
            self._columns[name] = grown
            mask = np.zeros(size, dtype=bool)
            mask[: self._n] = self._logged[name][: self._n]
            self._logged[name] = mask

    def to_dict(self) -> dict[str, list[float | str | None]]:
        """Columns as JSON-safe lists: ``None`` where not logged, ``"nan"``/``"inf"`` as text."""

        def encode(v: float, logged: bool) -> float | str | None:
            if not logged:
                return None
            return v if math.isfinite(v) else repr(v)

        out: dict[str, Any] = {"step": self.steps.tolist()}
        for name in self._columns:
            out[name] = [encode(v, m) for v, m in zip(self.values(name).tolist(),
                                                      self.logged(name).tolist(), strict=True)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Iterable[Any]]) -> MetricHistory:
        """The inverse of :meth:`to_dict`."""
        history = cls()
        steps = [float(s) for s in data.get("step", [])]
        n = len(steps)
        history._steps = np.resize(np.asarray(steps, dtype=float), max(16, n))
        history._n = n
        for name, column in data.items():
            if name == "step":
                continue
            column = list(column)
            values = np.full(len(history._steps), np.nan)
            logged = np.zeros(len(history._steps), dtype=bool)
            values[:n] = [math.nan if v is None else float(v) for v in column]
            logged[:n] = [v is not None for v in column]
            history._columns[name] = values
            history._logged[name] = logged
        return history
