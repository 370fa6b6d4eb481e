"""The advice on an Optuna trial's reported values, cached per trial, and where it is recorded.

One :class:`TrialAdvisors` keeps an :class:`advisor.Advisor` per running trial and feeds it only the
values reported since the last call, so advising after every report costs one ``update``. The
cache is only a shortcut: the advice is a pure function of the values the trial reported (and
the budget), so every process that shares a study computes the same advice; a cached advisor
whose history no longer matches the trial is rebuilt from the reported values.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ..advice import Advice
from ..advisor import Advisor

__all__ = ["MONITOR", "TrialAdvisors", "check_single_objective", "frozen_trial",
           "record_advice"]

MONITOR = "value"  # the name of the reported intermediate value inside the advisor
ATTR_PREFIX = "advisor."
#: The default tolerance of a trial's early finish in a sweep, as a share of the best value: in
#: a sweep what a stop costs is a change of winner, and trials often end within a fraction of a
#: percent of each other (AlgoPerf's do), so the single run's 1% is too coarse. 0.1% was chosen
#: on the pruning benchmark's tune tasks (AlgoPerf loss regret 0.160 -> 0.145 at 0.79 -> 0.82 of
#: the epochs; workload unchanged; TaskSet 0.318 -> 0.313).
SWEEP_MIN_IMPROVEMENT = 0.001


class TrialAdvisors:
    """An :class:`advisor.Advisor` per trial, fed incrementally; at most ``max_trials`` kept.
    ``min_improvement`` defaults to :data:`SWEEP_MIN_IMPROVEMENT` (0.1%) unless given."""

    def __init__(self, advisor_kwargs: Mapping[str, Any] | None = None,
                 max_trials: int = 256) -> None:
        self.advisor_kwargs = {"min_improvement": SWEEP_MIN_IMPROVEMENT, **(advisor_kwargs or {})}
        unknown = sorted(set(self.advisor_kwargs) - set(inspect.signature(Advisor).parameters))
        if unknown:
            raise TypeError(f"unknown advisor setting(s) {', '.join(map(repr, unknown))}; the "
                            f"settings are those of advisor.Advisor: "
                            f"{', '.join(inspect.signature(Advisor).parameters)}.")
        Advisor(MONITOR, "min", **self.advisor_kwargs)  # validate the settings up front
        self.max_trials = max_trials
        self._entries: OrderedDict[tuple[str, int], tuple[Advisor, list[tuple[int, float]]]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def advise(self, study_name: str, number: int, intermediate_values: Mapping[int, float],
               mode: str, max_steps: float | None) -> Advice | None:
        """The advice on a trial's reported values (``None`` if it reported none)."""
        reported = sorted((int(s), float(v)) for s, v in intermediate_values.items())
        if not reported:
            return None
        key = (study_name, number)
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                advisor, fed = entry
                if (advisor.mode != mode or len(fed) > len(reported)
                        or not _same(fed, reported[: len(fed)])):
                    entry = None
            if entry is None:
                advisor, fed = Advisor(MONITOR, mode, **self.advisor_kwargs), []
            advisor.max_steps = max_steps
            for step, value in reported[len(fed):]:
                advisor.update(step, {MONITOR: value})
            fed = reported
            self._entries[key] = (advisor, fed)
            while len(self._entries) > self.max_trials:
                self._entries.popitem(last=False)
            return advisor.advice

    def __getstate__(self) -> dict[str, Any]:
        # a pruner travels to other processes (ddp_spawn, joblib): the cache stays behind
        return {"advisor_kwargs": self.advisor_kwargs, "max_trials": self.max_trials}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["advisor_kwargs"], state["max_trials"])

    def forget(self, study_name: str, number: int) -> None:
        """Drop a finished trial's advisor."""
        with self._lock:
            self._entries.pop((study_name, number), None)


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return all(sa == sb and (va == vb or (va != va and vb != vb)) for (sa, va), (sb, vb)
               in zip(a, b, strict=True))


def check_single_objective(study: Any) -> None:
    """Raise ``NotImplementedError`` for a multi-objective study, which the advisor cannot
    judge: it has no single value per step (Optuna's ``trial.report`` refuses them too)."""
    directions = getattr(study, "directions", None) or [study.direction]
    if len(directions) > 1:
        raise NotImplementedError(
            f"the advisor does not support multi-objective studies, but study "
            f"{study.study_name!r} has {len(directions)} objectives (Optuna's trial.report and "
            f"trial.should_prune do not support them either).")


def frozen_trial(trial: Any) -> Any:
    """The latest FrozenTrial of a live ``optuna.trial.Trial`` (what ``should_prune`` reads)."""
    latest = getattr(trial, "_get_latest_trial", None)  # no storage round trip
    if latest is not None:
        return latest()
    return trial.study._storage.get_trial(trial._trial_id)


def advice_attrs(advice: Advice, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trial user attributes (and MLflow tags) that say why a trial stopped."""
    attrs: dict[str, Any] = {
        "verdict": advice.verdict.value,
        "reason": advice.reason,
        "step": advice.step,
        "best_value": advice.best_value,
        "best_step": advice.best_step,
        "predicted_final": None if advice.forecast is None else advice.forecast.value,
    }
    attrs.update(extra or {})
    return {ATTR_PREFIX + k: v for k, v in attrs.items()}


def record_advice(study: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write the attributes to the trial in the study's storage (the trial is still running)."""
    storage = study._storage  # pruners get a FrozenTrial, which cannot set attributes itself
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
