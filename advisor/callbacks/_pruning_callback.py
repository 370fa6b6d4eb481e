"""AdvisorPruningCallback: a Lightning callback that reports to an Optuna trial and prunes it."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna

from ..advice import Advice, Verdict
from ..history import step_text
from ._pruner import AdvisorPruner
from ._trials import ATTR_PREFIX, advice_attrs
from .lightning import AdvisorCallback

__all__ = ["AdvisorPruningCallback"]


class AdvisorPruningCallback(AdvisorCallback):
    """Reports every validation check to an Optuna trial, prunes it, and finishes it early.

    Everything :class:`advisor.AdvisorCallback` does (advice at each check, MLflow), plus: the
    monitored value is reported to ``trial`` at each check (step = the epoch, or the global step
    when validation runs several times an epoch, so steps never collide); when
    ``trial.should_prune()`` says so, training stops and :class:`optuna.TrialPruned` is raised
    with the reason; when the advisor says the trial has converged (plateau, overfitting),
    training stops and the objective returns :attr:`best_value`, so the trial ends COMPLETE with
    the best value it reached. Either way the trial's user attributes (``advisor.verdict``,
    ``advisor.reason``, ...) and the MLflow run's tags say why.

    Example:
        >>> import optuna
        >>> from pytorch_lightning import Trainer
        >>> from advisor import AdvisorPruner, AdvisorPruningCallback
        >>> def objective(trial):
        ...     model = make_model(lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
        ...     pruning = AdvisorPruningCallback(trial, monitor="val_loss")
        ...     Trainer(max_epochs=50, callbacks=[pruning]).fit(model)  # doctest: +SKIP
        ...     pruning.check_pruned()  # needed only with several processes (DDP)
        ...     return pruning.best_value
        >>> study = optuna.create_study(pruner=AdvisorPruner())  # doctest: +SKIP

    DDP: rank 0 reports to the trial and decides; the decision is broadcast, so all ranks stop at
    the same check. With one process :class:`optuna.TrialPruned` is raised from ``fit``; with
    several, ``fit`` returns and :meth:`check_pruned` raises it (also in a ``ddp_spawn`` parent,
    from the attributes rank 0 wrote to the study's storage).

    Args:
        trial: the ``optuna.trial.Trial`` of this objective call.
        monitor: the metric to report and judge; its direction is the study's.
        train_metric: as for :class:`advisor.AdvisorCallback`.
        **kwargs: further :class:`advisor.AdvisorCallback` settings (``log_to_mlflow``,
            ``run_name``, ...) and :class:`advisor.Advisor` settings.
    """

    def __init__(self, trial: Any, monitor: str = "val_loss", train_metric: str | None = None,
                 **kwargs: Any) -> None:
        if not hasattr(trial, "report") or not hasattr(trial, "should_prune"):
            raise TypeError(f"trial must be an optuna.trial.Trial, but got "
                            f"{type(trial).__name__}.")
        if "mode" in kwargs or "action" in kwargs:
            raise TypeError("AdvisorPruningCallback takes the mode from the study's direction "
                            "and always acts; do not pass mode or action.")
        mode = "max" if trial.study.direction.name == "MAXIMIZE" else "min"
        super().__init__(monitor, mode, train_metric, action="stop", **kwargs)
        self.trial = trial
        self.pruned = False
        self.prune_reason: str | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        pruner = self.trial.study.pruner
        if stage == "fit" and isinstance(pruner, AdvisorPruner):
            # the trial's steps are this callback's epochs (or global steps): the pruner's
            # reasons count in them too, unless it was given a unit
            pruner.advisors.advisor_kwargs.setdefault("unit", self.unit)

    @property
    def best_value(self) -> float | None:
        """The best value of the monitored metric: what the objective should return."""
        return None if self.advice is None else self.advice.best_value

    def check_pruned(self) -> None:
        """Raise :class:`optuna.TrialPruned` if the trial was pruned (call it after ``fit``)."""
        if not self.pruned:
            attrs = self.trial.study._storage.get_trial(self.trial._trial_id).user_attrs
            if attrs.get(ATTR_PREFIX + "pruned"):
                self.pruned, self.prune_reason = True, attrs.get(ATTR_PREFIX + "reason")
        if self.pruned:
            raise optuna.TrialPruned(self.prune_reason or "pruned by training-advisor")

    # ------------------------------------------------------------------ the rule
    def _guarded_check(self, trainer: Any) -> None:
        super()._guarded_check(trainer)
        if self.pruned and trainer.world_size == 1:
            raise optuna.TrialPruned(self.prune_reason)

    def _act(self, trainer: Any, metrics: dict[str, float], advice: Advice) -> None:
        decision: tuple[bool, str, str] = (False, "", "")
        if trainer.is_global_zero:
            self.trial.report(metrics[self.monitor], step=int(advice.step))
            if self.trial.should_prune():
                decision = (True, *self._record_pruned(advice))
        pruned, verdict, reason = trainer.strategy.broadcast(decision, src=0)
        if pruned:
            self.pruned, self.prune_reason = True, reason
            if verdict in {v.value for v in Verdict}:  # what the trial records, here too
                self._record(dataclasses.replace(advice, verdict=Verdict(verdict),
                                                 should_stop=True, reason=reason))
            if self._writer is not None:  # the run's tags and description tell the pruning
                self._writer.submit(tags=self._tags(trainer, self.advice))
            # Optuna logs "Trial N pruned. <reason>" itself at its default verbosity
            self._stop(trainer, advice.step, reason,
                       announce=optuna.logging.get_verbosity() > optuna.logging.INFO)
            return
        super()._act(trainer, metrics, advice)
        if self.stop_reason is not None and trainer.is_global_zero:  # converged: finish early
            # its best checkpoint is named when the fit ends (advisor.best_checkpoint)
            for key, value in advice_attrs(advice, {"finished_early": True}).items():
                self.trial.set_user_attr(key, value)

    def _record_pruned(self, advice: Advice) -> tuple[str, str]:
        """The verdict and reason the pruner recorded (AdvisorPruner does), or recorded here."""
        attrs = self.trial.study._storage.get_trial(self.trial._trial_id).user_attrs
        if attrs.get(ATTR_PREFIX + "pruned"):
            return attrs.get(ATTR_PREFIX + "verdict", ""), attrs.get(ATTR_PREFIX + "reason", "")
        name = type(self.trial.study.pruner).__name__
        reason = (f"Pruned by {name} at {self.unit} {step_text(advice.step)}; the advisor said: "
                  f"{advice.reason}")
        for key, value in advice_attrs(advice, {"pruned": True, "pruned_by": name,
                                                "reason": reason}).items():
            self.trial.set_user_attr(key, value)
        return advice.verdict.value, reason

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_end(trainer, pl_module)
        checkpoint = self.best_checkpoint
        if (self.stop_reason is not None and not self.pruned and checkpoint
                and trainer.is_global_zero):  # saved after the check that finished the trial
            self.trial.set_user_attr(ATTR_PREFIX + "best_checkpoint", checkpoint)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, optuna.TrialPruned) and self._writer is not None:
            # a pruned trial's run ends with its advice, report and plot, as a finished one
            self._end_fit(trainer)
            self._finish(trainer, "KILLED")
            return
        super().on_exception(trainer, pl_module, exception)
