"""Replay the advisor over runs that already happened, one row of decisions per run."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from .advice import Advice
from .advisor import Advisor
from .detectors.plan import LrPlan
from .history import AdvisorWarning

__all__ = ["PLANNED_LR", "advise_run", "long_to_wide", "prepare_runs", "replay"]

#: the metric read as the learning-rate plan: its values at later steps are known in advance
PLANNED_LR = "planned_lr"

_STEP_COLUMNS = ("epoch", "step")
#: A column of the wide frame marking the steps where the monitor was logged as NaN (a value
#: the long format and MLflow keep, which the wide frame would read as "not logged").
MONITOR_LOGGED = "advisor_monitor_logged"
_NOT_METRICS = {"run_id", "task", "source", "step", "epoch", "timestamp", "time", "metric", "value",
                MONITOR_LOGGED}


def _step_column(frame: pd.DataFrame, what: str, step_column: str | None = None) -> str:
    if step_column is not None:
        if step_column not in frame.columns:
            raise ValueError(f"{what} has no column {step_column!r}; columns: "
                             f"{list(frame.columns)}.")
        return step_column
    for name in _STEP_COLUMNS:
        if name in frame.columns:
            return name
    raise ValueError(f"{what} needs an 'epoch' or 'step' column, but has columns "
                     f"{list(frame.columns)}.")


def long_to_wide(frame: pd.DataFrame, step_column: str | None = None) -> pd.DataFrame:
    """Long format (``run_id, epoch|step, metric, value[, task]``) to one column per metric."""
    step = _step_column(frame, "the long-format frame", step_column)
    keys = [c for c in ("task", "run_id") if c in frame.columns] + [step]
    wide = frame.groupby(keys + ["metric"], sort=True, observed=True)["value"].last()
    wide = wide.unstack("metric")
    wide.columns.name = None
    return wide.reset_index()


def prepare_runs(frame: pd.DataFrame, monitor: str, train_metric: str | None = None,
                 step_column: str | None = None) -> tuple[pd.DataFrame, str, list[str], list[str]]:
    """Check and tidy a long or wide frame for replay.

    Returns the wide frame (one row per run and step), the x-axis column, the run key columns
    (``task``, ``run_id``, those present) and the numeric metric columns. Raises ``ValueError``
    naming the metrics present when ``monitor`` (or ``train_metric``) is missing.
    """
    for key in ("task", "run_id"):  # grouping would drop those rows, and their runs, silently
        missing = frame[key].isna().to_numpy() if key in frame.columns else None
        if missing is not None and missing.any():
            raise ValueError(f"{key} is missing in {int(missing.sum())} row(s) (the first at "
                             f"row {frame.index[missing.argmax()]!r}); every row needs one.")
    for name, what in ((monitor, "monitored metric"), (train_metric, "train metric")):
        if step_column is not None and name == step_column:
            raise ValueError(f"the step column {step_column!r} cannot also be the {what}; pass "
                             f"the column of epochs or steps as the step column.")
    logged_nan = None
    if "metric" in frame.columns and "value" in frame.columns:
        # a NaN the run logged for the monitor is a value (the run diverged), not a gap: the
        # wide frame cannot tell the two apart, so the steps it was logged at are marked
        monitor_rows = frame[frame["metric"] == monitor]
        if monitor_rows["value"].isna().any():
            logged_nan = monitor_rows
        frame = long_to_wide(frame, step_column)
    step = _step_column(frame, "the frame", step_column)
    if logged_nan is not None:
        keys = [c for c in ("task", "run_id") if c in frame.columns]
        marks = logged_nan[keys + [step]].drop_duplicates().assign(**{MONITOR_LOGGED: True})
        frame = frame.merge(marks, on=keys + [step], how="left")
        frame[MONITOR_LOGGED] = frame[MONITOR_LOGGED].eq(True)
    if monitor not in frame.columns:
        metrics = sorted(c for c in frame.columns if c not in _NOT_METRICS)
        raise ValueError(f"monitored metric {monitor!r} is not in the data; metrics present: "
                         f"{', '.join(metrics) or 'none'}.")
    if train_metric is not None and train_metric not in frame.columns:
        raise ValueError(f"train metric {train_metric!r} is not in the data.")
    for column in dict.fromkeys(c for c in (monitor, train_metric) if c is not None):
        if not pd.api.types.is_numeric_dtype(frame[column]):  # text would be dropped silently
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = (values.isna() & frame[column].notna()).to_numpy()
            if bad.any():
                raise ValueError(f"column {column!r} must hold numbers, but row "
                                 f"{frame.index[bad.argmax()]!r} has "
                                 f"{frame[column].to_numpy()[bad.argmax()]!r}.")
            frame = frame.assign(**{column: values})
    keys = [c for c in ("task", "run_id") if c in frame.columns]
    metric_columns = [c for c in frame.columns if c not in _NOT_METRICS and c != step
                      and pd.api.types.is_numeric_dtype(frame[c])]
    if frame[step].isna().any():
        frame = frame[frame[step].notna()]
    if frame.duplicated(keys + [step]).any():  # CSVLogger: several rows per epoch
        frame = frame.groupby(keys + [step], sort=False, observed=True)[metric_columns].last()
        frame = frame.reset_index()
    return frame, step, keys, metric_columns


def replay(
    frame: pd.DataFrame,
    monitor: str = "val_loss",
    mode: str = "min",
    train_metric: str | None = None,
    step_column: str | None = None,
    **advisor_kwargs: Any,
) -> pd.DataFrame:
    """Feed each run's history to an :class:`Advisor` in step order; one row of decisions per run.

    ``frame`` is long (``run_id``, ``epoch`` or ``step``, ``metric``, ``value``, optional
    ``task``) or wide (one column per metric, as Lightning's ``CSVLogger`` writes; without
    ``run_id`` it is one run; rows sharing a step are merged, the last value of each metric
    winning). The x-axis is ``step_column``, else ``epoch``, else ``step``. Each run's own last
    step is its budget (``max_steps``), as a user's ``max_epochs`` would be; the decision at a
    step uses only the values up to it, except ``planned_lr``: the rate the schedule was
    planned to give at each step, known before training (the callback logs it as
    ``advisor/planned_lr``), which becomes the run's learning-rate plan (``Advisor(lr_plan=)``).
    ``advisor_kwargs`` go to :class:`Advisor`.

    Returns one row per run: ``run_id`` (and ``task``), ``stop_epoch`` (the first step where the
    advice says stop, else the last step), ``stopped`` (whether it stopped early), ``verdict``,
    ``reason``, ``best_epoch`` and ``best_value`` (best up to the stop), ``last_epoch``.

    Example:
        >>> import math
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"epoch": range(1, 41),
        ...                       "val_loss": [0.5 + math.exp(-e / 4) for e in range(1, 41)]})
        >>> row = replay(frame, monitor="val_loss").iloc[0]
        >>> row["verdict"], bool(row["stop_epoch"] < 40)
        ('plateau', True)
    """
    frame, step, keys, metric_columns = prepare_runs(frame, monitor, train_metric, step_column)
    groups: Iterable[tuple[Any, pd.DataFrame]] = (
        frame.groupby(keys, sort=False, observed=True) if keys else [((), frame)])
    rows = []
    for key, run in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key, strict=True))
        row.update(replay_run(run.sort_values(step), step, metric_columns, monitor, mode,
                              train_metric, advisor_kwargs))
        rows.append(row)
    return pd.DataFrame(rows)


def advise_run(run: pd.DataFrame, step: str, metric_columns: list[str], monitor: str,
               mode: str, train_metric: str | None, advisor_kwargs: dict[str, Any],
               max_steps: float | None = None, unit: str | None = None) -> list[Advice]:
    """The advice at every check of one run (sorted by ``step``), up to the first stop.

    The budget is ``max_steps`` (at least the run's last step), else the run's last step. The
    reasons count in ``unit`` (default: the x-axis column's name, ``epoch`` or ``step``).
    """
    steps = run[step].to_numpy(dtype=float)
    plan = None
    if PLANNED_LR in metric_columns and "lr_plan" not in advisor_kwargs:
        plan = run_plan(steps, run[PLANNED_LR].to_numpy(dtype=float))
        metric_columns = [c for c in metric_columns if c != PLANNED_LR]
    table = run[metric_columns].to_numpy(dtype=float)
    has_monitor = ~np.isnan(run[monitor].to_numpy(dtype=float))
    if MONITOR_LOGGED in run.columns:  # NaN logged as the monitor's value: a check
        has_monitor |= run[MONITOR_LOGGED].to_numpy(dtype=bool)
    last = float(steps[-1]) if steps.size else 0.0
    if plan is not None:  # the plan goes to the budget, beyond the steps that happened
        last = max(last, plan.steps[-1])
    budget = max(max_steps or 0.0, last)
    settings = {"unit": unit or (step if step.isidentifier() else "step"), **advisor_kwargs}
    advisor = Advisor(monitor, mode, train_metric, max_steps=budget if budget > 0 else None,
                      lr_plan=plan, **settings)
    advices: list[Advice] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvisorWarning)
        for i in np.flatnonzero(has_monitor):
            values = {name: v for name, v in zip(metric_columns, table[i], strict=True)
                      if not np.isnan(v) or name == monitor}
            advices.append(advisor.update(steps[i], values))
            if advices[-1].should_stop:
                break
    return advices


def run_plan(steps: np.ndarray, planned: np.ndarray) -> LrPlan | None:
    """One run's ``planned_lr`` values as a plan (``None`` where none was logged)."""
    ok = np.isfinite(steps) & np.isfinite(planned) & (planned >= 0)
    if not ok.any():
        return None
    s, r = steps[ok], planned[ok]
    order = np.argsort(s, kind="stable")
    s, r = s[order], r[order]
    keep = np.r_[s[1:] != s[:-1], True]  # the last value logged at a step wins
    return LrPlan(tuple(s[keep]), tuple(r[keep]), PLANNED_LR)


def replay_run(run: pd.DataFrame, step: str, metric_columns: list[str], monitor: str, mode: str,
               train_metric: str | None, advisor_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replay one run (sorted by ``step``) and return its row of decisions."""
    logged = [c for c in metric_columns if c != PLANNED_LR]  # a plan reaches past the run's end
    ran = run[logged].notna().any(axis=1).to_numpy(copy=True) if logged else np.ones(len(run), bool)
    if MONITOR_LOGGED in run.columns:
        ran |= run[MONITOR_LOGGED].to_numpy(dtype=bool)
    last = float(run[step].to_numpy()[ran][-1] if ran.any() else run[step].iloc[-1])
    advices = advise_run(run, step, metric_columns, monitor, mode, train_metric, advisor_kwargs)
    if not advices:
        return {"stop_epoch": last, "stopped": False, "verdict": "undecided",
                "reason": f"{monitor} was never logged.", "best_epoch": None,
                "best_value": None, "last_epoch": last}
    advice = advices[-1]
    return {"stop_epoch": advice.step if advice.should_stop else last,
            "stopped": bool(advice.should_stop and advice.step < last),
            "verdict": advice.verdict.value, "reason": advice.reason,
            "best_epoch": advice.best_step, "best_value": advice.best_value, "last_epoch": last}
