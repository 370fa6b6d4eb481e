"""The advisor's answer: a verdict, the evidence behind it and a sentence a person can read.

Everything here is frozen and JSON-safe (``to_dict()`` turns NaN and infinities into ``None``),
so an :class:`Advice` can be logged, stored in a checkpoint or sent across processes as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any

__all__ = ["Advice", "Evidence", "Forecast", "Verdict"]


class Verdict(StrEnum):
    """What the advisor concludes about a run at one check.

    ``IMPROVING``: the monitored metric is still getting better by a margin worth the budget left.
    ``UNDECIDED``: not enough evidence either way (short history, noisy curve, schedule pending).
    ``PLATEAU``: the metric has stopped improving by any margin the remaining budget could bring.
    ``OVERFITTING``: validation got significantly worse since its best while training went on.
    ``DIVERGED``: the metric became NaN/infinite or blew up far beyond its usual scale.
    ``UNPROMISING``: in a sweep, the run is unlikely to end better than the best runs so far
    (only :class:`advisor.AdvisorPruner` says this: it compares runs with each other).
    """

    IMPROVING = "improving"
    UNDECIDED = "undecided"
    PLATEAU = "plateau"
    OVERFITTING = "overfitting"
    DIVERGED = "diverged"
    UNPROMISING = "unpromising"

    @property
    def stops(self) -> bool:
        """Whether this verdict, on its own, means training should stop."""
        return self is not Verdict.IMPROVING and self is not Verdict.UNDECIDED


def _json_safe(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return value.to_dict()
    return value


@dataclass(frozen=True)
class Evidence:
    """What one detector measured, with its test statistic, p-value or interval and its window.

    Attributes:
        detector: which detector produced it (``"plateau"``, ``"overfitting"``, ``"divergence"``,
            ``"forecast"``, ``"schedule"``, ``"history"``).
        summary: one sentence a person can read.
        statistic: the test statistic (e.g. Mann-Kendall z), if any.
        pvalue: the p-value of the test, if any.
        interval: a confidence or prediction interval ``(low, high)``, if any.
        window: the first and last step the detector looked at.
        noise_scale: the check-to-check noise of the metric, in the metric's units.
        details: further named numbers (slopes, Prechelt's GL and PQ, thresholds).
    """

    detector: str
    summary: str
    statistic: float | None = None
    pvalue: float | None = None
    interval: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    noise_scale: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Forecast:
    """The predicted value of the monitored metric at ``step``, with a ``level`` prediction
    interval, from the learning-curve ``models`` weighted by ``weights`` (BIC). ``scale`` is
    the change the interval is measured in (see
    :func:`~advisor.detectors.forecast.conformal_interval`; NaN where not computed) and
    ``calibrated`` says whether the interval is the conformal one or the models' own, and
    ``ahead`` what the schedule still holds before ``step`` (``"none"``, ``"decay"`` or
    ``"restart"``), the table the calibration used. ``model_value`` is the curve models' own
    forecast; a calibrated forecast's ``value`` is it combined with the latest checks' level
    (see :func:`~advisor.detectors.forecast.combined_forecast`; the interval is calibrated
    around ``model_value``), an uncalibrated one's is ``model_value``."""

    step: float
    value: float
    low: float
    high: float
    level: float
    models: tuple[str, ...]
    weights: tuple[float, ...] = ()
    scale: float = math.nan
    calibrated: bool = False
    ahead: str = ""
    model_value: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Advice:
    """The advisor's advice at one check of one run.

    Attributes:
        step: the step (epoch, global step, evaluation index) the advice is about.
        verdict: the :class:`Verdict`.
        should_stop: whether training should stop now.
        reason: one sentence a person can read, saying why.
        evidence: what each detector measured.
        monitor: the monitored metric's name; ``mode`` is ``"min"`` or ``"max"``.
        best_step, best_value: the best check so far (restore this checkpoint).
        suggested_stop_step: the step after which training stopped paying off (for a plateau,
            where the best-so-far came within tolerance of the best; for overfitting and divergence,
            the best step); ``None`` while the run is still worth training.
        forecast: the predicted value at the end of the budget (``max_steps``), if fitted.
        expected_gain: how much better than ``best_value`` the metric is expected to get by the end
            of the budget (never negative: the best checkpoint is kept), with
            ``expected_gain_interval``.
    """

    step: float
    verdict: Verdict
    should_stop: bool
    reason: str
    monitor: str
    mode: str
    evidence: tuple[Evidence, ...] = ()
    best_step: float | None = None
    best_value: float | None = None
    suggested_stop_step: float | None = None
    forecast: Forecast | None = None
    expected_gain: float | None = None
    expected_gain_interval: tuple[float, float] | None = None

    def evidence_for(self, detector: str) -> Evidence | None:
        """The evidence of one detector, or ``None`` if it did not report."""
        return next((e for e in self.evidence if e.detector == detector), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become ``None``)."""
        return {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}
