"""Detectors: pure functions on arrays, each returning a small frozen result with its evidence.

Every detector works on a loss-like curve (lower is better); the :class:`advisor.Advisor`
negates ``mode="max"`` metrics before calling them.
"""

from .divergence import DivergenceResult, detect_divergence
from .forecast import CurveFit, fit_learning_curve
from .overfitting import OverfittingResult, detect_overfitting
from .plan import LrPlan, PlanState, PlateauRule, read_plan
from .plateau import PlateauResult, PlateauState, detect_plateau, hidden_change, metric_resolution
from .schedule import ScheduleState, read_schedule

__all__ = [
    "CurveFit",
    "DivergenceResult",
    "LrPlan",
    "OverfittingResult",
    "PlanState",
    "PlateauResult",
    "PlateauRule",
    "PlateauState",
    "ScheduleState",
    "detect_divergence",
    "detect_overfitting",
    "detect_plateau",
    "fit_learning_curve",
    "hidden_change",
    "metric_resolution",
    "read_plan",
    "read_schedule",
]
