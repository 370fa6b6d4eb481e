"""Returns: the chance that the rest of the budget improves the best by less than 1% of its value.

Algorithm: a gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``,
exported to ``returns_model.json`` and evaluated here with numpy) reads a handful of scale-free
numbers about the curve so far (:data:`FEATURES`: how far into the budget, how long since the best,
how much the best improved lately, the trend tests of validation and training, what the slope
and the learning-curve forecast project for the budget left, the noise) and answers the chance
that stopping now keeps a result within 1% of what the full budget would give (restore-best).
It was fitted on the tune tasks of the public curves in ``benchmarks/`` (TaskSet and AlgoPerf;
``benchmarks/returns_model.py`` rebuilds it and reports it on the held-out tasks).

Why a fitted model: the trend test asks whether a curve still improves; whether what is left is
worth the budget is a different question, and on real curves its answer depends jointly on where
the run is in its budget, how noisy the metric is against its value and how fast it slows down.
Rules on one number at a time cannot separate harmless from harmful stops as well.

Assumptions and when it is wrong: the metric's value has a meaningful zero (a loss, an error
rate, an accuracy), since "1%" is of the value; a curve unlike the training curves (a late
learning-rate drop the history does not show, grokking) gets too high a chance. The
:class:`advisor.Advisor` therefore asks it only when its budget is known, never while a logged
learning-rate schedule still has a decay to come, and a stop needs ``confirm`` checks in a row.
It is asked, and was fitted, only where the trend test no longer finds the curve improving.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["FEATURES", "ReturnsModel", "ReturnsResult", "chance_of_small_returns", "load_model"]

#: The model's inputs, in order. ``*_rel`` are relative to the best value, ``*_span`` to the
#: improvement made so far, ``*_noise`` to the check-to-check noise.
FEATURES = (
    "progress",  # step / max_steps
    "since_best_share",  # checks since the best / checks so far
    "checks_since_best",
    "recent_gain_span",  # what the best improved over the latest quarter of the checks
    "recent_gain_rel",
    "noise_span",
    "noise_rel",
    "trend_z",  # Mann-Kendall z of the plateau window (negative: improving)
    "train_trend_z",  # the same for the training metric (0 without one)
    "slope_gain_rel",  # Theil-Sen slope x steps left
    "slope_gain_span",
    "slope_gain_high_rel",  # the optimistic end of the slope interval x steps left
    "gap_noise",  # latest (median of 3) above the best
    "forecast_gain_rel",  # the learning-curve forecast's expected gain
    "forecast_gain_high_rel",  # the optimistic end of its interval
)

_TINY = 1e-12


@dataclass(frozen=True)
class ReturnsResult:
    """The chance that the rest of the budget brings less than ``relative_gain`` of the value.

    Attributes:
        probability: the model's estimate of that chance.
        relative_gain: the gain the model judges small (0.01: 1% of the best value).
        features: the inputs the estimate rests on, by name.
    """

    probability: float
    relative_gain: float
    features: dict[str, float]


class ReturnsModel:
    """A boosted tree ensemble stored as flat arrays; ``predict`` walks every tree at once.

    All trees' nodes sit in one array; a leaf's children are itself, so walking ``max_depth``
    levels from every root lands each tree on its leaf without testing for leaves.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        if tuple(spec["features"]) != FEATURES:
            raise ValueError("returns model features do not match advisor.detectors.returns.")
        trees = spec["trees"]
        sizes = np.array([len(t["feature"]) for t in trees])
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        nodes = np.arange(int(sizes.sum()))

        def flat(key: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(t[key], dtype) for t in trees])

        leaf = flat("leaf", bool)
        shift = np.repeat(offsets, sizes)
        self.feature = flat("feature", np.int64)
        self.threshold = flat("threshold", float)
        self.left = np.where(leaf, nodes, flat("left", np.int64) + shift)
        self.right = np.where(leaf, nodes, flat("right", np.int64) + shift)
        self.value = flat("value", float)
        self.roots = offsets
        self.baseline = float(spec["baseline"])
        self.relative_gain = float(spec["relative_gain"])
        self.depth = int(spec["max_depth"])
        self.meta = {k: v for k, v in spec.items() if k != "trees"}

    def predict(self, x: np.ndarray) -> float:
        """The chance (0-1) for one feature vector in :data:`FEATURES` order."""
        x = np.nan_to_num(np.asarray(x, float), nan=0.0, posinf=1e6, neginf=-1e6)
        node = self.roots
        for _ in range(self.depth):
            node = np.where(x[self.feature[node]] <= self.threshold[node], self.left[node],
                            self.right[node])
        raw = self.baseline + float(self.value[node].sum())
        return 1.0 / (1.0 + math.exp(-raw))


@cache
def load_model() -> ReturnsModel:
    """The model that ships with the package (read once)."""
    text = resources.files("advisor.detectors").joinpath("returns_model.json").read_text()
    return ReturnsModel(json.loads(text))


def returns_features(*, step: float, max_steps: float, checks: int, checks_since_best: int,
                     best: float, span: float, recent_gain: float, noise: float, gap: float,
                     trend_z: float, train_trend_z: float | None, slope: float,
                     slope_low: float, forecast_gain: float | None,
                     forecast_gain_high: float | None) -> dict[str, float]:
    """The model's inputs from what the advisor measured (loss-like: lower is better)."""
    scale = max(abs(best), _TINY)
    span = max(span, _TINY)
    left = max(max_steps - step, 0.0)
    return {
        "progress": step / max_steps,
        "since_best_share": checks_since_best / max(checks, 1),
        "checks_since_best": float(checks_since_best),
        "recent_gain_span": recent_gain / span,
        "recent_gain_rel": recent_gain / scale,
        "noise_span": noise / span,
        "noise_rel": noise / scale,
        "trend_z": trend_z,
        "train_trend_z": 0.0 if train_trend_z is None else train_trend_z,
        "slope_gain_rel": max(0.0, -slope) * left / scale,
        "slope_gain_span": max(0.0, -slope) * left / span,
        "slope_gain_high_rel": max(0.0, -slope_low) * left / scale,
        "gap_noise": gap / max(noise, _TINY),
        "forecast_gain_rel": (forecast_gain or 0.0) / scale,
        "forecast_gain_high_rel": (forecast_gain_high or 0.0) / scale,
    }


def chance_of_small_returns(features: dict[str, float],
                            model: ReturnsModel | None = None) -> ReturnsResult:
    """The chance that training to the end of the budget improves the best by less than the
    model's ``relative_gain`` (1%) of its value, given :func:`returns_features`.

    >>> from advisor.detectors.returns import FEATURES
    >>> late_and_flat = dict.fromkeys(FEATURES, 0.0) | {"progress": 0.9, "checks_since_best": 30,
    ...                                                 "since_best_share": 0.35}
    >>> chance_of_small_returns(late_and_flat).probability > 0.9
    True
    """
    model = load_model() if model is None else model
    x = np.array([features[name] for name in FEATURES], float)
    return ReturnsResult(probability=model.predict(x), relative_gain=model.relative_gain,
                         features=dict(features))
