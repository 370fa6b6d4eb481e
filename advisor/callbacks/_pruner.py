"""AdvisorPruner: prune Optuna trials the forecast says cannot win, or that diverged."""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from .. import _explain
from ..advice import Advice, Verdict
from ..detectors.promise import PeerResult, chance_from_peers, chance_to_beat
from ..history import AdvisorWarning, check_settings, positive_number
from ._peers import PeerCurves
from ._trials import TrialAdvisors, advice_attrs, check_single_objective, record_advice

__all__ = ["AdvisorPruner"]


class AdvisorPruner(BasePruner):
    """Prunes a trial when it is unlikely to end better than the best trials so far, or diverged.

    At each ``trial.should_prune()`` the trial's reported values go through an
    :class:`advisor.Advisor` (one per trial, fed incrementally). Two estimates of its chance to
    end better than the ``n_best``-th best COMPLETE trial are asked: its learning-curve forecast
    of the value at the end of the budget (with its prediction interval), and how many finished
    trials gained, after the same step, as much as it needs. When one is below ``threshold`` and
    the other below one half, the trial is pruned as :attr:`advisor.Verdict.UNPROMISING`. A trial
    whose values became NaN/infinite or blew up is pruned as :attr:`advisor.Verdict.DIVERGED`.
    Every pruned trial gets user attributes ``advisor.verdict``, ``advisor.reason``,
    ``advisor.probability``, ``advisor.threshold``, ``advisor.target`` and
    ``advisor.predicted_final``.

    A trial that has converged near a competitive value is not pruned: call
    :func:`advisor.advise_trial` after each report and return ``advice.best_value`` when
    ``advice.should_stop``, so the trial finishes early as COMPLETE and the sampler learns from it.

    The pruner keeps no state that only one process sees: its cache of per-trial advisors is a
    shortcut for values read from the study's storage, so several processes sharing a study
    (``RDBStorage``, ``JournalStorage``) make the same decisions.

    Example:
        >>> import math, optuna
        >>> from advisor import AdvisorPruner, advise_trial
        >>> def objective(trial):
        ...     rate = trial.suggest_float("rate", 0.01, 1.0, log=True)
        ...     for epoch in range(60):
        ...         trial.report(0.1 / rate + math.exp(-rate * epoch), epoch)
        ...         if trial.should_prune():
        ...             raise optuna.TrialPruned()
        ...         advice = advise_trial(trial)
        ...         if advice.should_stop:
        ...             return advice.best_value
        ...     return advice.best_value
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(pruner=AdvisorPruner(max_steps=59),
        ...                             sampler=optuna.samplers.RandomSampler(seed=0))
        >>> study.optimize(objective, n_trials=12)
        >>> pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
        >>> len(pruned) > 0 and all(t.user_attrs["advisor.verdict"] == "unpromising"
        ...                         for t in pruned)
        True

    Args:
        max_steps: the last step a trial reports (its budget); ``"auto"`` takes the latest step
            any COMPLETE trial reported (no forecast, so no pruning on promise, before one has).
        threshold: prune when the chance to beat the target is below this.
        n_best: the target is the ``n_best``-th best value among COMPLETE trials.
        n_startup_trials: no pruning on promise until this many COMPLETE trials have gone past
            the trial's step.
        n_warmup_steps: no pruning on promise before this step (divergence prunes at any step).
        wrapped_pruner: another pruner also consulted; a trial it prunes is recorded as pruned
            by it.
        **advisor_kwargs: further :class:`advisor.Advisor` settings (``min_checks``,
            ``forecast_level``, ...). ``min_improvement`` defaults to 0.1% here, not the single
            run's 1%: in a sweep a stop costs a change of winner, and trials often end within a
            fraction of a percent of each other.
    """

    def __init__(
        self,
        max_steps: int | float | str | None = "auto",
        *,
        threshold: float = 0.05,
        n_best: int = 1,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        wrapped_pruner: BasePruner | None = None,
        **advisor_kwargs: Any,
    ) -> None:
        if not (max_steps is None or (isinstance(max_steps, str) and max_steps == "auto")
                or positive_number(max_steps) is not None):
            raise ValueError(
                f"max_steps must be a positive number, 'auto' or None, but got {max_steps!r}.")
        check_settings(integers={"n_startup_trials": n_startup_trials,
                                 "n_warmup_steps": n_warmup_steps}, reals={}, flags={})
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (
                0 < threshold < 1):
            raise ValueError(f"threshold must be in (0, 1), but got {threshold!r}.")
        if isinstance(n_best, bool) or not isinstance(n_best, int) or n_best < 1:
            raise ValueError(f"n_best must be a positive integer, but got {n_best!r}.")
        taken = sorted(set(advisor_kwargs) & {"monitor", "mode", "max_steps", "train_metric"})
        if taken:
            raise ValueError(f"AdvisorPruner sets {', '.join(taken)} itself (a trial reports "
                             f"one value, judged in the study's direction, up to max_steps=...); "
                             f"do not pass "
                             f"{', '.join(f'{k}={advisor_kwargs[k]!r}' for k in taken)}.")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials cannot be negative, but got {n_startup_trials!r}.")
        if n_warmup_steps < 0:
            raise ValueError(f"n_warmup_steps cannot be negative, but got {n_warmup_steps!r}.")
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(f"wrapped_pruner must be an optuna pruner, but got "
                            f"{type(wrapped_pruner).__name__}.")
        self.max_steps = max_steps if max_steps in (None, "auto") else positive_number(max_steps)
        self.threshold = float(threshold)
        self.n_best = n_best
        self.n_startup_trials = int(n_startup_trials)
        self.n_warmup_steps = int(n_warmup_steps)
        self.wrapped_pruner = wrapped_pruner
        self.advisors = TrialAdvisors(advisor_kwargs)
        self.peers = PeerCurves()
        self._warned = False  # a failure inside prune() was reported

    # ------------------------------------------------------------------ Optuna's interface
    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        """Whether to prune ``trial`` now (recording why in its user attributes when it is).

        Like Optuna's pruners, it answers ``False`` rather than raising where pruning does not
        apply: a finished trial (it cannot be pruned any more, and its attributes cannot be
        written) and multi-objective studies (where Optuna's ``trial.report`` is not supported).
        """
        if len(study.directions) > 1 or trial.state.is_finished():
            return False
        try:
            return self._prune(study, trial)
        except Exception as exc:  # never the sweep's end: one warning, the trial goes on
            if not self._warned:
                self._warned = True
                warnings.warn(f"training-advisor could not judge trial {trial.number}: "
                              f"{type(exc).__name__}: {exc} (the trial goes on unpruned; later "
                              f"failures are not repeated).", AdvisorWarning, stacklevel=2)
            return False

    def _prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        advice = self.advise(study, trial, complete)
        if advice is None:
            return False
        sign = 1.0 if advice.mode == "min" else -1.0
        self.peers.sync(study.study_name, sign, complete)
        target = peers = None
        finals = np.sort(self.peers.best_values())
        if (finals.size >= max(self.n_startup_trials, self.n_best)
                and advice.step >= self.n_warmup_steps and advice.best_value is not None):
            target = sign * float(finals[self.n_best - 1])
            peers = chance_from_peers(sign * target, sign * advice.best_value,
                                      *self.peers.at(advice.step), step=advice.step)
        decision = self.decide(advice, target, peers)
        if decision.verdict in (Verdict.DIVERGED, Verdict.UNPROMISING):
            return self._record(study, trial, decision, pruned_by="advisor")
        if self.wrapped_pruner is not None and self.wrapped_pruner.prune(study, trial):
            name = type(self.wrapped_pruner).__name__
            return self._record(study, trial, dataclasses.replace(
                decision, should_stop=True,
                reason=f"Pruned by {name}; the advisor alone would not prune: {decision.reason}"),
                pruned_by=name)
        return False

    # ------------------------------------------------------------------ the decision (pure)
    def decide(self, advice: Advice, target: float | None,
               peers: PeerResult | None = None) -> Advice:
        """The trial's advice, turned UNPROMISING when it is unlikely to end better than
        ``target`` (the value to beat, in the study's direction; ``None``: no comparison yet).

        Two estimates of its chance must agree: its own learning-curve forecast, and the
        finished trials (``peers``, at least ``n_startup_trials`` of them) that went on past
        this step: how many gained after it as much as this trial needs (a conformal p-value).
        One must be below the threshold and the other below one half. Either alone is wrong
        too often: the forecast misses late gains from learning-rate schedules, and a few
        finished trials say little about a trial unlike them (a slow starter).
        """
        if advice.verdict is Verdict.DIVERGED or target is None or advice.best_value is None:
            return advice
        sign = 1.0 if advice.mode == "min" else -1.0
        best, f = advice.best_value, advice.forecast
        if f is None or peers is None or peers.peers < max(1, self.n_startup_trials):
            return advice
        lo, hi = sorted((sign * f.low, sign * f.high))
        p_forecast = chance_to_beat(sign * target, sign * best, sign * f.value, lo, hi,
                                    f.level).probability
        p_peers = peers.probability
        p = min(p_forecast, p_peers)
        unpromising = p < self.threshold and max(p_forecast, p_peers) < 0.5
        ev = _explain.promise_evidence(p, p_forecast, p_peers, peers, target, self.threshold,
                                       self.n_best, f, self.advisors.advisor_kwargs.get(
                                           "unit", "step"))
        if not unpromising:
            return dataclasses.replace(advice, evidence=advice.evidence + (ev,))
        return dataclasses.replace(advice, verdict=Verdict.UNPROMISING, should_stop=True,
                                   evidence=advice.evidence + (ev,),
                                   reason=f"Unpromising: {ev.summary}.")

    def advise(self, study: optuna.study.Study, trial: FrozenTrial,
               complete: list[FrozenTrial] | None = None) -> Advice | None:
        """The advisor's advice on the values ``trial`` has reported (no comparison with others).

        Raises:
            NotImplementedError: the study is multi-objective.
        """
        check_single_objective(study)
        mode = "max" if study.direction.name == "MAXIMIZE" else "min"
        if self.max_steps == "auto":  # the longest COMPLETE trial
            if complete is None:
                complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self.peers.sync(study.study_name, 1.0 if mode == "min" else -1.0, complete)
            last = self.peers.last_step()
            budget = last if last is not None and last > 0 else None
        else:
            budget = None if self.max_steps is None else float(self.max_steps)
        return self.advisors.advise(study.study_name, trial.number, trial.intermediate_values,
                                    mode, budget)

    def _record(self, study: optuna.study.Study, trial: FrozenTrial, advice: Advice,
                pruned_by: str) -> bool:
        """Say why in the trial's attributes; ``False`` if it has finished meanwhile (a live
        trial's cached FrozenTrial still says RUNNING after ``study.tell``): no pruning then."""
        promise = advice.evidence_for("promise")
        extra: dict[str, Any] = {"pruned": True, "pruned_by": pruned_by}
        if promise is not None:
            extra.update({k: v for k, v in promise.details.items() if v is not None})
        try:
            record_advice(study, trial._trial_id, advice_attrs(advice, extra))
        except UpdateFinishedTrialError:
            return False
        finally:
            self.advisors.forget(study.study_name, trial.number)
        return True
