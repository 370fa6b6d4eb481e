"""One run's curves and advice, as the plots and reports show them (no I/O, no plotting).

A :class:`RunAnalysis` comes from replaying a finished run (:func:`analyze_run`, used by
``advisor report`` and ``advisor analyze``) or from a live callback
(``AdvisorCallback.analysis()``); the dashboards only read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..advice import Advice, Verdict
from ..history import step_text
from ..replay import advise_run, prepare_runs
from .markdown import advice_history_row

__all__ = ["PLOT_LIMIT", "RunAnalysis", "analyze_run", "plottable"]

# Values beyond this (and infinities) are left out of plots: drawing libraries compute limits,
# ticks and transforms in floats, which overflow on spans near the float range (1.8e308).
PLOT_LIMIT = 1e100


def plottable(value: float) -> bool:
    """Whether a value can be drawn: finite and within :data:`PLOT_LIMIT`."""
    return abs(value) <= PLOT_LIMIT  # False for NaN and infinities too


def _where(steps: Sequence[float], hits: Sequence[bool]) -> str:
    """``step 21``, ``steps 21-40`` or ``steps 3, 7, 21-40``: the steps of the checks where
    ``hits``, consecutive checks as one span (the first four spans shown)."""
    spans: list[tuple[float, float]] = []
    previous = False
    for step, hit in zip(steps, hits, strict=True):
        if hit and previous:
            spans[-1] = (spans[-1][0], step)
        elif hit:
            spans.append((step, step))
        previous = hit
    shown = [step_text(a) if a == b else f"{step_text(a)}-{step_text(b)}" for a, b in spans[:4]]
    more = ", ..." if len(spans) > 4 else ""
    single = len(spans) == 1 and spans[0][0] == spans[0][1]
    return f"{'step' if single else 'steps'} {', '.join(shown)}{more}"


def value_notes(name: str, steps: Sequence[float], values: Sequence[float]) -> list[str]:
    """What is wrong with a curve's values, for a person: infinities, and values too large to
    draw (both are left out of the plots). Empty when nothing is."""
    logged = [(s, v) for s, v in zip(steps, values, strict=True) if not math.isnan(v)]
    if not logged:
        return []
    xs, ys = [s for s, _ in logged], [v for _, v in logged]
    notes = []
    infinite = [math.isinf(v) for v in ys]
    if any(infinite):
        notes.append(f"{name} is infinite at {sum(infinite)} of {len(ys)} checks "
                     f"({_where(xs, infinite)})")
    huge = [math.isfinite(v) and not plottable(v) for v in ys]
    if any(huge):
        largest = max((v for v, h in zip(ys, huge, strict=True) if h), key=abs)
        notes.append(f"{name} is too large to draw (beyond +-{PLOT_LIMIT:g}; up to "
                     f"{largest:.4g}) at {sum(huge)} of {len(ys)} checks ({_where(xs, huge)})")
    return notes


@dataclass(frozen=True)
class RunAnalysis:
    """One run's curves and the advice the advisor gave (or would have given) on them.

    Attributes:
        run_id, run_name: the run (``run_name`` is shown as text, never as markup).
        monitor, mode, train_metric: what was judged.
        unit: ``"epoch"`` or ``"step"``: what the x values count.
        steps: the x value of every point of the curves.
        values: the monitored metric at ``steps`` (NaN where it was not logged).
        train_values: the training metric at ``steps``, if one was given.
        advice: the advice shown: at the advisor's first stop, else at the last check.
        history: one :func:`~advisor.dashboards.advice_history_row` per check, in order.
        budget: the run's budget in ``unit`` (the forecast's horizon), if known.
        experiment: the experiment's name, if any.
        skipped: why the run could not be analysed (then ``advice`` is ``None``).
        pruned: the run was pruned (by an Optuna pruner): ``advice`` is the pruning decision.
        running: the run has not ended (a run at its budget has then not "completed" it).
        origin: where the trainer counts epochs from 0 (Lightning), the name of that numbering
            (``"Lightning's"``, ``"logged as"``), so checkpoints are named in both.
        checkpoint: the file a checkpoint callback saved at the best check, if known;
            ``checkpoint_missing``: the trainer is known to have saved none of it.
        links: ``(label, url)`` pairs shown on the run's report (the dashboard, MLflow).
    """

    run_id: str
    run_name: str
    monitor: str
    mode: str
    train_metric: str | None
    unit: str
    steps: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    train_values: tuple[float, ...] | None = None
    advice: Advice | None = None
    history: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)
    budget: float | None = None
    experiment: str | None = None
    skipped: str | None = None
    pruned: bool = False
    running: bool = False
    origin: str | None = None
    checkpoint: str | None = None
    checkpoint_missing: bool = False
    links: tuple[tuple[str, str], ...] = ()

    @property
    def last_step(self) -> float | None:
        """The last step with a value of the monitored metric."""
        logged = [s for s, v in zip(self.steps, self.values, strict=True) if not math.isnan(v)]
        return logged[-1] if logged else None

    @property
    def stop_step(self) -> float | None:
        """Where the advisor said stop first (else the last check): the compute worth spending."""
        first = next((row["step"] for row in self.history if row["should_stop"]), None)
        return first if first is not None else self.last_step

    @property
    def saved_steps(self) -> float:
        """Epochs (or steps) trained after the advisor said stop: compute that could be saved."""
        last, stop = self.last_step, self.stop_step
        return 0.0 if last is None or stop is None else max(last - stop, 0.0)

    @property
    def stopped_early(self) -> bool:
        """Whether the advisor said stop before the run's last check (the run went on)."""
        return self.saved_steps > 0

    def _best(self, until: float | None = None) -> tuple[float, float] | None:
        """The best (step, value) of the monitored metric, up to ``until`` (inclusive)."""
        sign = 1.0 if self.mode == "min" else -1.0
        best = None
        for s, v in zip(self.steps, self.values, strict=True):
            if until is not None and s > until:
                break
            if math.isfinite(v) and (best is None or sign * v < sign * best[1]):
                best = (s, v)
        return best

    @property
    def kept_value(self) -> float | None:
        """The best value by the advisor's stop: what stopping there would have kept."""
        best = self._best(self.stop_step)
        return None if best is None else best[1]

    @property
    def final_best(self) -> float | None:
        """The best value of the whole run, after the advisor's stop included."""
        best = self._best()
        return None if best is None else best[1]

    @property
    def final_best_step(self) -> float | None:
        best = self._best()
        return None if best is None else best[0]

    @property
    def regret(self) -> float | None:
        """What the advisor's stop would have cost, in the metric's units (0: nothing): how
        much better the run's best got after the stop. ``None`` without values."""
        kept, final = self.kept_value, self.final_best
        if kept is None or final is None:
            return None
        return max(kept - final if self.mode == "min" else final - kept, 0.0)

    @property
    def regret_share(self) -> float | None:
        """:attr:`regret` as a share of the run's best value (as the stopping benchmark
        measures it)."""
        regret, final = self.regret, self.final_best
        if regret is None or final is None:
            return None
        return regret / max(abs(final), 1e-12)

    @property
    def verdict(self) -> str:
        return "skipped" if self.advice is None else self.advice.verdict.value

    @property
    def plateau_window(self) -> tuple[float, float] | None:
        """The window the plateau test judged flat, when the verdict is a plateau."""
        if self.advice is None or self.advice.verdict is not Verdict.PLATEAU:
            return None
        evidence = self.advice.evidence_for("plateau")
        return None if evidence is None else evidence.window

    @property
    def overfitting_onset(self) -> float | None:
        """The best step, after which validation got worse, when the verdict is overfitting."""
        if self.advice is None or self.advice.verdict is not Verdict.OVERFITTING:
            return None
        return self.advice.suggested_stop_step

    @property
    def value_notes(self) -> list[str]:
        """What is wrong with the curves' values (infinities, values too large to draw), one
        sentence each; those values are left out of the plots."""
        notes = value_notes(self.monitor, self.steps, self.values)
        if self.train_metric is not None and self.train_values is not None:
            notes += value_notes(self.train_metric, self.steps, self.train_values)
        return notes

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-safe row: the experiment dashboard's table and ``--json`` output."""
        a = self.advice
        return {
            "run_id": self.run_id, "run_name": self.run_name, "verdict": self.verdict,
            "unit": self.unit, "stop": self.stop_step, "last": self.last_step,
            "saved": self.saved_steps, "best": None if a is None else a.best_step,
            "best_value": None if a is None else a.best_value,
            "suggested_stop": None if a is None else a.suggested_stop_step,
            "regret": None if a is None else self.regret,
            "regret_share": None if a is None else self.regret_share,
            "pruned": self.pruned, "checkpoint": self.checkpoint,
            "reason": self.skipped if a is None else a.reason,
        }


def analyze_run(
    frame: pd.DataFrame,
    monitor: str = "val_loss",
    mode: str = "min",
    train_metric: str | None = None,
    step_column: str | None = None,
    *,
    run_id: str = "",
    run_name: str | None = None,
    unit: str | None = None,
    budget: float | None = None,
    experiment: str | None = None,
    **advisor_kwargs: Any,
) -> RunAnalysis:
    """Replay the advisor over one run's curves (long or wide frame, as for :func:`replay`).

    The decision at each check uses only the values up to it, and the replay ends at the first
    stop, as :func:`advisor.replay` does; the curves are kept in full, so a report shows what
    the run did after the advisor would have stopped it. ``budget`` (default: the run's last
    step) is the forecast's horizon. ``unit`` defaults to the x-axis column's name.

    Raises:
        ValueError: ``monitor`` (or ``train_metric``) is not in the data; the message names the
            metrics present.
    """
    wide, step, keys, metric_columns = prepare_runs(frame, monitor, train_metric, step_column)
    if "run_id" in keys and wide["run_id"].nunique() > 1:
        raise ValueError(f"analyze_run takes one run, but the frame has "
                         f"{wide['run_id'].nunique()} run_ids.")
    wide = wide.sort_values(step)
    advices = advise_run(wide, step, metric_columns, monitor, mode, train_metric, advisor_kwargs,
                         max_steps=budget, unit=unit)
    steps = wide[step].to_numpy(dtype=float)
    last = float(steps[-1]) if steps.size else None
    return RunAnalysis(
        run_id=run_id, run_name=run_name or run_id, monitor=monitor, mode=mode,
        train_metric=train_metric, unit=unit or step, experiment=experiment,
        steps=_floats(steps), values=_floats(wide[monitor]),
        train_values=None if train_metric is None else _floats(wide[train_metric]),
        advice=advices[-1] if advices else None,
        history=tuple(advice_history_row(a) for a in advices),
        budget=max(budget or 0.0, last or 0.0) or None,
        skipped=None if advices else f"{monitor} has no values.",
    )


def _floats(values: Sequence[float] | np.ndarray | pd.Series) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=float))
