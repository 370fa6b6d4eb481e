"""Hyperparameter sweeps replayed from real learning curves through real Optuna studies.

A :class:`Population` is every configuration of one task for one monitor (its curve and its best
value); a sweep is an ordered sample of it, and :func:`run_sweep` replays it through an
in-memory Optuna study under one pruning rule: trial ``i`` replays the ``i``-th configuration's
curve, reporting evaluation ``k`` (1-based) as step ``k`` and calling ``trial.should_prune()``
after each report. Rules (see :data:`RULES`): Optuna's pruners with their defaults, each alone
and with Lightning's ``EarlyStopping(patience=10)`` inside the trial, and the advisor
(``AdvisorPruner`` + ``advise_trial`` finishing converged trials early as COMPLETE).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PatientPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
)
from optuna.trial import TrialState

from benchmarks._curves import Run, monitors_for
from benchmarks._rules import LightningEarlyStopping

__all__ = ["ANCHORS", "ADVISORS", "RULES", "Population", "populations", "run_sweep"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

ES_PATIENCE = 10
PATIENT_PATIENCE = 5  # PatientPruner(MedianPruner(), patience=5)
MIN_POPULATION = 10


@dataclass(frozen=True)
class Population:
    """The configurations of one task for one monitor: curves to replay and their best values.

    ``budget`` is the last step a trial can report (the longest curve: TaskSet's 51 evaluations,
    the AlgoPerf workload's runtime budget in evaluations); ``best`` and ``median`` are the best
    and the median of the configurations' best values, in the metric's direction.
    """

    source: str
    task: str
    metric: str
    mode: str
    kind: str
    run_ids: tuple[str, ...]
    curves: tuple[np.ndarray, ...]
    budget: int
    best: float
    median: float

    @property
    def label(self) -> str:
        return self.source if self.source == "taskset" else f"{self.source}/{self.kind}"

    def regret(self, value: float | None) -> float:
        """(value - best) / (median - best) in the metric's direction: 0 = the best config,
        1 = no better than the median one; inf when there is no value."""
        if value is None or not math.isfinite(value):
            return math.inf
        sign = 1.0 if self.mode == "min" else -1.0
        return max(sign * (value - self.best), 0.0) / (sign * (self.median - self.best))

    def es_stop(self, idx: int) -> int:
        """The evaluation (1-based) after which Lightning's ``EarlyStopping(patience=10)`` stops
        configuration ``idx``'s curve, 0 if never. Its decision at ``k`` depends only on the
        values up to ``k``, so it is run once per curve (the real class, fed value by value) and
        memoised: the same stop as running it inside every trial, without its ~80 us per check.
        """
        key = (self.task, self.metric, idx)
        if key not in _ES_STOPS:
            es = LightningEarlyStopping(self.metric, self.mode, ES_PATIENCE)
            _ES_STOPS[key] = next((k for k, v in enumerate(self.curves[idx], 1)
                                   if es.update(k, float(v), math.nan)), 0)
        return _ES_STOPS[key]


_ES_STOPS: dict[tuple[str, str, int], int] = {}


def _best(values: np.ndarray, mode: str) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.min() if mode == "min" else finite.max())


def populations(runs: Sequence[Run], which: str = "both") -> list[Population]:
    """One population per (task, monitor). AlgoPerf keeps external-tuning runs only and ends
    each curve at its monitor's last finite value; TaskSet curves keep their NaN padding."""
    groups: dict[tuple[str, str], list[tuple[Run, np.ndarray]]] = {}
    meta: dict[tuple[str, str], tuple[str, str]] = {}
    for run in runs:
        if run.source == "algoperf" and "/external_tuning/" not in run.run_id:
            continue
        for mon in monitors_for(run, which):
            values = run.metrics[mon.metric]
            if run.source != "taskset":
                values = values[: np.flatnonzero(np.isfinite(values))[-1] + 1]
            groups.setdefault((run.task, mon.metric), []).append((run, values))
            meta[(run.task, mon.metric)] = (mon.mode, mon.kind)
    out = []
    for (task, metric), members in sorted(groups.items()):
        mode, kind = meta[(task, metric)]
        bests = np.array([_best(v, mode) for _, v in members])
        best = float(bests.min() if mode == "min" else bests.max())
        median = float(np.median(bests))
        if len(members) < MIN_POPULATION or median == best:
            continue
        out.append(Population(
            source=members[0][0].source, task=task, metric=metric, mode=mode, kind=kind,
            run_ids=tuple(r.run_id for r, _ in members), curves=tuple(v for _, v in members),
            budget=max(len(v) for _, v in members), best=best, median=median))
    return out


# ----------------------------------------------------------------------------------------------
# Rules: name -> (pruner factory(budget), Lightning EarlyStopping(patience=10) inside?, advise?)

PrunerFactory = Callable[[int], BasePruner]


def _advisor(budget: int, wrapped: BasePruner | None = None) -> BasePruner:
    import json
    import os

    from advisor import AdvisorPruner

    kwargs = json.loads(os.environ.get("ADVISOR_PRUNER_KWARGS", "{}"))  # --pruner-kwargs
    return AdvisorPruner(max_steps=budget, wrapped_pruner=wrapped, **kwargs)


_PRUNERS: dict[str, PrunerFactory] = {
    "Nop": lambda b: NopPruner(),
    "Median": lambda b: MedianPruner(),
    "Percentile25": lambda b: PercentilePruner(25.0),
    "SuccessiveHalving": lambda b: SuccessiveHalvingPruner(),
    "Hyperband": lambda b: HyperbandPruner(max_resource=b),
    "Patient(Median)": lambda b: PatientPruner(MedianPruner(), patience=PATIENT_PATIENCE),
}
ANCHORS: tuple[str, ...] = (*_PRUNERS, *(f"{n}+ES{ES_PATIENCE}" for n in _PRUNERS))
ADVISORS: tuple[str, ...] = ("Advisor", "Advisor(Median)")
RULES: dict[str, tuple[PrunerFactory, bool, bool]] = {
    **{n: (f, False, False) for n, f in _PRUNERS.items()},
    **{f"{n}+ES{ES_PATIENCE}": (f, True, False) for n, f in _PRUNERS.items()},
    "Advisor": (lambda b: _advisor(b), False, True),
    "Advisor(Median)": (lambda b: _advisor(b, MedianPruner()), False, True),
}


def run_sweep(pop: Population, order: Sequence[int], rule: str, name: str = "sweep",
              seed: int = 0) -> dict:
    """Replay the configurations ``order`` of ``pop`` as one Optuna study under ``rule``.

    ``name`` is the study's name: Hyperband assigns trials to brackets by a hash of it, so the
    same name gives every rule the same brackets and a rerun the same result.

    Returns epochs consumed (evaluations reported), the full-curve epochs, the value and
    regret of the best COMPLETE trial, and counts of pruned / early-finished / failed trials
    with the epochs each kind saved.
    """
    factory, use_es, advise = RULES[rule]
    if advise:
        from advisor import advise_trial
    direction = "minimize" if pop.mode == "min" else "maximize"
    study = optuna.create_study(study_name=name, direction=direction, pruner=factory(pop.budget),
                                sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        idx = order[trial.number]
        trial.set_user_attr("config", pop.run_ids[idx])
        es_stop = pop.es_stop(idx) if use_es else 0
        best = math.nan
        for k, value in enumerate(pop.curves[idx], 1):
            value = float(value)
            trial.report(value, k)
            if math.isfinite(value) and (math.isnan(best) or (
                    value < best if pop.mode == "min" else value > best)):
                best = value
            if trial.should_prune():
                raise optuna.TrialPruned()
            if advise:
                advice = advise_trial(trial)
                if advice.should_stop:
                    return advice.best_value  # type: ignore[return-value]
            if k == es_stop:
                break  # EarlyStopping(patience=10) stops the trainer: restore-best
        return best  # restore-best (ModelCheckpoint); NaN -> FAIL

    study.optimize(objective, n_trials=len(order), catch=())
    out = {"epochs": 0, "full": 0, "pruned": 0, "early": 0, "failed": 0, "saved_pruned": 0,
           "saved_early": 0, "value": None, "config": None}
    best_trial = None
    for t in study.get_trials(deepcopy=False):
        full, used = len(pop.curves[order[t.number]]), len(t.intermediate_values)
        out["epochs"] += used
        out["full"] += full
        if t.state == TrialState.PRUNED:
            out["pruned"] += 1
            out["saved_pruned"] += full - used
        elif t.state == TrialState.COMPLETE:
            out["early"] += used < full
            out["saved_early"] += full - used
            if best_trial is None or (t.value < best_trial.value if pop.mode == "min"
                                      else t.value > best_trial.value):
                best_trial = t
        else:
            out["failed"] += 1
    if best_trial is not None:
        out["value"] = float(best_trial.value)
        out["config"] = best_trial.user_attrs["config"]
    out["regret"] = pop.regret(out["value"])
    out.update(winner_fate(pop, order, study))
    return out


def winner_fate(pop: Population, order: Sequence[int], study: optuna.Study) -> dict:
    """What the rule did to the sweep's best configuration (the one with the best value over
    its whole curve): its trial's state (``ran`` to the end, finished ``early``, ``pruned``), the
    evaluations it reported, and for a trial the advisor pruned, the two chances it recorded."""
    sign = 1.0 if pop.mode == "min" else -1.0
    bests = [sign * _best(pop.curves[i], pop.mode) if np.isfinite(pop.curves[i]).any()
             else math.inf for i in order]
    pos = int(np.argmin(bests))
    trial = study.get_trials(deepcopy=False)[pos]
    used, full = len(trial.intermediate_values), len(pop.curves[order[pos]])
    fate = ("pruned" if trial.state == TrialState.PRUNED
            else "early" if trial.state == TrialState.COMPLETE and used < full else "ran")
    attrs = trial.user_attrs
    return {"winner_fate": fate, "winner_step": used / max(full, 1),
            "winner_pf": attrs.get("advisor.forecast_probability"),
            "winner_pp": attrs.get("advisor.peer_probability")}
