"""Optuna integration: :class:`AdvisorPruner` and :func:`advise_trial`.

Optuna pruners rank a trial against the others at the same step; the advisor also tells a trial
that has converged (finish it early as COMPLETE, with its best value) from one that cannot win
(prune it), and says why in the trial's user attributes.
"""

from __future__ import annotations

from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

from ..advice import Advice
from ..history import positive_number
from ._pruner import AdvisorPruner
from ._trials import (
    TrialAdvisors,
    advice_attrs,
    check_single_objective,
    frozen_trial,
    record_advice,
)

__all__ = ["AdvisorPruner", "advise_trial"]

_default_advisors: dict[float | None, TrialAdvisors] = {}


def advise_trial(trial: Any, max_steps: float | None = None, *, study: Any = None) -> Advice:
    """The advice on the values ``trial`` has reported so far: cheap to call after every report.

    When ``advice.should_stop`` for a converged trial (plateau or overfitting), return
    ``advice.best_value`` from the objective: the trial finishes early as COMPLETE with the best
    value it reached (restore that checkpoint), and its user attributes ``advisor.verdict``,
    ``advisor.reason``, ``advisor.best_step`` and ``advisor.predicted_final`` say why.

    With an :class:`AdvisorPruner` on the study, its settings and budget are used (and its cache:
    ``trial.should_prune()`` and this function advise once per report). Otherwise give the last
    step as ``max_steps``, or the trial is judged without a budget.

    Example:
        >>> import optuna
        >>> from advisor import advise_trial
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> def objective(trial):
        ...     for epoch in range(100):
        ...         trial.report(0.2 + 0.8 * 0.8 ** epoch, epoch)
        ...         advice = advise_trial(trial, max_steps=99)
        ...         if advice.should_stop:
        ...             break
        ...     return advice.best_value
        >>> study = optuna.create_study()
        >>> study.optimize(objective, n_trials=1)
        >>> study.trials[0].user_attrs["advisor.verdict"], study.trials[0].last_step < 99
        ('plateau', True)

    ``trial`` is a live ``optuna.trial.Trial``, or a ``FrozenTrial`` (``study.trials[i]``) with
    its ``study``; the attributes are written only to a trial that is still running.

    Raises:
        ValueError: the trial has reported no value yet, or ``max_steps`` is not a positive
            number or None.
        TypeError: ``trial`` is not a trial, or a ``FrozenTrial`` comes without ``study``.
        NotImplementedError: the study is multi-objective.
    """
    if max_steps is not None and positive_number(max_steps) is None:
        raise ValueError(f"max_steps must be a positive number (the last step a trial reports) "
                         f"or None, but got {max_steps!r}.")
    max_steps = None if max_steps is None else positive_number(max_steps)
    if not isinstance(trial, FrozenTrial | Trial):
        raise TypeError(f"advise_trial needs an optuna Trial (or a FrozenTrial with study=...), "
                        f"but got {type(trial).__name__}.")
    if study is not None and not isinstance(study, Study):
        raise TypeError(f"study must be an optuna Study, but got {type(study).__name__}.")
    if isinstance(trial, FrozenTrial):
        if study is None:
            raise TypeError(f"advise_trial got a FrozenTrial (trial {trial.number}), which does "
                            f"not know its study: pass study=..., or the live trial.")
        frozen = trial
    else:
        study = trial.study if study is None else study
        frozen = frozen_trial(trial)
    check_single_objective(study)
    pruner = study.pruner
    if isinstance(pruner, AdvisorPruner):
        advice = pruner.advise(study, frozen)
    else:
        if max_steps not in _default_advisors:
            _default_advisors[max_steps] = TrialAdvisors()
        mode = "min" if study.direction.name == "MINIMIZE" else "max"
        advice = _default_advisors[max_steps].advise(
            study.study_name, frozen.number, frozen.intermediate_values, mode, max_steps)
    if advice is None:
        raise ValueError(f"trial {trial.number} has reported no value yet: call trial.report "
                         f"before advise_trial.")
    if advice.should_stop and frozen.state is TrialState.RUNNING:
        attrs = advice_attrs(advice, {"finished_early": True})
        if trial is frozen:
            record_advice(study, frozen._trial_id, attrs)
        else:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
    return advice
