"""Lightning callback: advice at every validation check, in MLflow, and a stop when asked."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

from ..advice import Advice
from ..advisor import Advisor
from ..dashboards import (
    RunAnalysis,
    advice_history_row,
    advice_markdown,
    run_plot_png,
    run_report_html,
    story,
)
from ..detectors.plan import LrPlan, PlateauRule
from ..history import AdvisorWarning, check_settings, step_text
from ..tracking import check_scheme, default_tracking_uri
from ._lr_plan import plan_from_trainer
from ._mlflow import MlflowWriter, mark_training_experiment, resolve_run

__all__ = ["PLOT_ARTIFACT", "REPORT_ARTIFACT", "AdvisorCallback"]

REPORT_ARTIFACT, PLOT_ARTIFACT = "advice_report.html", "advice_plot.png"


def _logger_step(trainer: Any) -> int:
    """The step Lightning's loggers give the metrics logged now (``val_loss`` at validation):
    the count of batches that stepped the optimizer, one less than ``global_step`` during
    validation inside an epoch."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return step if isinstance(step, int) else int(trainer.global_step)


def _callback_bases() -> tuple[type, ...]:
    """Lightning's Callback from every Lightning package installed, so one class serves both."""
    bases: list[type] = []
    try:
        from pytorch_lightning import Callback as PLCallback
        bases.append(PLCallback)
    except ImportError:
        pass
    try:
        from lightning.pytorch import Callback as LCallback
        bases.append(LCallback)
    except ImportError:
        pass
    if not bases:
        raise ImportError("AdvisorCallback needs pytorch-lightning (pip install "
                          "'training-advisor[lightning]') or lightning.")
    return tuple(dict.fromkeys(bases))


class AdvisorCallback(*_callback_bases()):
    """Runs the advisor at every validation check; logs the advice to MLflow; stops if asked.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from advisor import AdvisorCallback
        >>> trainer = Trainer(max_epochs=50, callbacks=[
        ...     AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop")])

    It reads the values Lightning already logged (``trainer.callback_metrics``), the optimizer's
    learning rate, the trainer's budget (``max_epochs``, or ``max_steps`` when validation runs
    several times an epoch) and the learning-rate plan: at the start of training (and after a
    resume, or when the rate no longer follows the plan) it steps copies of the trainer's
    schedulers to the budget, so a plateau before a scheduled decay is not taken for the end
    (``ReduceLROnPlateau``: its reductions are awaited until they stop paying). The MLflow run
    is the trainer's ``MLFlowLogger`` run; else the active MLflow run; else a new run in
    ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``), to which
    the trainer's metrics are then logged too.

    Args:
        monitor, mode, train_metric: as for :class:`advisor.Advisor`.
        action: ``"advise"`` (log only) or ``"stop"`` (also stop the trainer when the advice
            says so, on every rank at the same check, not before ``Trainer(min_epochs=...)``).
        log_to_mlflow: write metrics, tags, description and artifacts to MLflow.
        tracking_uri, experiment_name, run_name: where a new run goes when no run is given.
        plan_lr: read the trainer's schedulers into a learning-rate plan (see above); with
            ``False`` the schedule is read from the logged rate only.
        param_group: the optimizer's param group whose rate is read and planned.
        report: at the end of training, also log ``advice_report.html`` (a self-contained
            page: verdict, reason, plot, evidence, verdict timeline) and ``advice_plot.png``;
            :meth:`log_report` logs them on demand.
        strict: raise errors from inside the advisor instead of warning and going on.
        **advisor_kwargs: further :class:`advisor.Advisor` settings.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        train_metric: str | None = None,
        action: str = "advise",
        *,
        log_to_mlflow: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "training-advisor",
        run_name: str | None = None,
        report: bool = True,
        strict: bool = False,
        plan_lr: bool = True,
        param_group: int = 0,
        **advisor_kwargs: Any,
    ) -> None:
        if action not in ("advise", "stop"):
            raise ValueError(f"action must be 'advise' or 'stop', but got {action!r}.")
        if isinstance(param_group, bool) or not isinstance(param_group, int) or param_group < 0:
            raise ValueError(f"param_group must be a non-negative integer, but got "
                             f"{param_group!r}.")
        taken = sorted(set(advisor_kwargs) & {"max_steps", "unit"})
        if taken:
            raise ValueError(f"AdvisorCallback reads {' and '.join(taken)} from the trainer "
                             f"(max_epochs, max_steps, val_check_interval); do not pass "
                             f"{', '.join(f'{k}={advisor_kwargs[k]!r}' for k in taken)}.")
        check_settings(integers={}, reals={}, flags={
            "log_to_mlflow": log_to_mlflow, "report": report, "strict": strict,
            "plan_lr": plan_lr})
        for name, text, optional in (("tracking_uri", tracking_uri, True),
                                     ("experiment_name", experiment_name, False),
                                     ("run_name", run_name, True)):
            if not (optional and text is None) and not (isinstance(text, str) and text.strip()):
                raise ValueError(f"{name} must be a non-empty string"
                                 f"{' or None' if optional else ''}, but got {text!r}.")
        if tracking_uri is not None:
            check_scheme(tracking_uri)  # a typo no retry will fix
        Advisor(monitor, mode, train_metric, **advisor_kwargs)  # validate the settings now
        self.monitor, self.mode, self.train_metric = monitor, mode, train_metric
        self.action = action
        self.log_to_mlflow = log_to_mlflow
        self.tracking_uri, self.experiment_name, self.run_name = (
            tracking_uri, experiment_name, run_name)
        self.report = report
        self.strict = strict
        self.plan_lr = plan_lr
        self.param_group = param_group
        self.advisor_kwargs = advisor_kwargs
        self.advisor: Advisor | None = None
        self.advice: Advice | None = None
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stopped_step: float | None = None
        self.pruned = False  # AdvisorPruningCallback: the trial was pruned (advice says why)
        self.unit = "epoch"
        self.budget: float | None = None
        self._writer: MlflowWriter | None = None
        self.run_id: str | None = None  # the MLflow run written to, once known
        self._tracking_uri: str | None = None
        self._logger_run_name: str | None = None
        self._run_name_seen: str | None = None
        self._rank_zero = True
        self._log_trainer_metrics = False
        self._warned: set[str] = set()
        self._stop_tag_written = False
        self._pending_state: dict[str, Any] | None = None
        self._fitting = False  # between this fit's setup and its end
        self._read: dict[str, Any] = {}  # callback_metrics as read at the last check
        self._group: list[AdvisorCallback] = [self]  # the callbacks writing to the run
        self._prefix = ""  # their names' namespace when several share the run
        self._lr: float | None = None
        self._check_pending = False  # validation ran this epoch; judged at the epoch's end
        self._logged_step: int | None = None  # where Lightning's loggers put this check
        self._trainer: Any = None
        self._planned_for: tuple[int, ...] | None = None  # the schedulers the plan was read from
        self._fit_trainer: Any = None  # the trainer of the fit under way (its checkpoints)
        # the last fit's trainer (its id: a reference would keep it, or not pickle); a trainer
        # has trained (current_epoch > 0) at setup only if it is that one fitting on
        self._last_trainer: int | None = None
        self._fitting = False
        self._kept: tuple[str | None, bool] = (None, False)  # after the fit: file, none kept
        self._announce = False  # print the stop when the fit ends

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # ------------------------------------------------------------------ hooks (thin)
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        try:
            self._setup_fit(trainer)
        except Exception as exc:
            if self.strict:
                raise
            self.advisor = None  # no advice this fit; the training is the user's
            self._warn_once("setup", f"training-advisor is off for this fit: it could not start: "
                                     f"{type(exc).__name__}: {exc} (training goes on; pass "
                                     f"strict=True to raise).")

    def _setup_fit(self, trainer: Any) -> None:
        continuing = (self._last_trainer == id(trainer) and self.advisor is not None
                      and self._pending_state is None and trainer.current_epoch > 0)
        self._new_fit(keep_history=continuing)
        interval = trainer.val_check_interval
        per_epoch = isinstance(interval, float) and interval == 1.0
        self.unit = "epoch" if per_epoch else "step"
        max_epochs = trainer.max_epochs
        # per step, estimated_stepping_batches needs the dataloaders: set at the first check;
        # a budget of max_steps with checks per epoch is set at the start of training
        self.budget = float(max_epochs) if per_epoch and isinstance(max_epochs, int) and (
            max_epochs > 0) else None
        if continuing:
            self.advisor.max_steps = self.budget
            self._planned_for = None  # plan again up to the new budget
        else:
            self.advisor = self._new_advisor()
        if self._pending_state is not None:
            self._restore_or_start_afresh(self._pending_state)
        self._rank_zero = trainer.is_global_zero
        self._fit_trainer, self._fitting = trainer, True
        if self.log_to_mlflow and trainer.is_global_zero:
            self._join_run(trainer)

    def _new_advisor(self) -> Advisor:
        """An advisor with this callback's settings, the trainer's budget and unit."""
        return Advisor(self.monitor, self.mode, self.train_metric, max_steps=self.budget,
                       unit=self.unit, **self.advisor_kwargs)

    def _new_fit(self, keep_history: bool = False) -> None:
        """A new fit starts a new history (a reused callback carried the last fit's rows and
        stop); a checkpoint it resumes from restores one (:meth:`load_state_dict`). The same
        trainer fitting on (``fit`` again with more epochs) keeps its history and advice."""
        if not keep_history:
            self.advice, self.history = None, []
        self.stop_reason, self.stopped_step = None, None
        self.run_id = self._tracking_uri = self._logger_run_name = self._lr = None
        self._check_pending, self._trainer, self._log_trainer_metrics = False, None, False
        self._warned, self._planned_for, self._read = set(), None, {}
        self._group, self._prefix = [self], ""
        self._stop_tag_written, self._run_name_seen = False, None
        self._kept, self._logged_step, self._announce = (None, False), None, False

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._fitting = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.advisor is not None and self.unit == "epoch":
            self._budget_from_steps(trainer)
        if self.plan_lr and self.advisor is not None:  # after a resume: restored schedulers
            self._guarded(self._plan, trainer)

    def _budget_from_steps(self, trainer: Any) -> None:
        """With checks per epoch, ``max_steps`` may end training before ``max_epochs`` (or be the
        only budget, ``max_epochs=-1``): the budget is then the epoch in which the optimizer
        takes its last step, once the dataloaders say how many steps an epoch takes."""
        max_steps = getattr(trainer, "max_steps", -1)
        batches = getattr(trainer, "num_training_batches", None)
        accumulate = getattr(trainer, "accumulate_grad_batches", 1) or 1
        if not (isinstance(max_steps, int) and max_steps > 0 and isinstance(batches, int | float)
                and math.isfinite(batches) and batches > 0):
            return
        per_epoch = math.ceil(batches / accumulate)
        epochs = float(math.ceil(max_steps / per_epoch))
        if self.budget is None or epochs < self.budget:
            self.budget = self.advisor.max_steps = epochs

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        # the rate this epoch trains with (schedulers step before validation ends)
        optimizers = getattr(trainer, "optimizers", None) or []
        groups = optimizers[0].param_groups if optimizers else []
        group = groups[min(self.param_group, len(groups) - 1)] if groups else None
        self._lr = float(group["lr"]) if group is not None else None
        if self.plan_lr and self.advisor is not None and self._plan_changed(trainer):
            self._guarded(self._plan, trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.advisor is None or not self._fitting:
            return  # trainer.validate() after a fit, on whatever data, is not a check
        self._logged_step = _logger_step(trainer)
        if self.unit == "epoch":
            # judged at the end of the epoch, once Lightning has averaged the epoch's training
            # metrics (a ModelCheckpoint saves after this callback's epoch end: the file of a
            # best check is named in the messages and tags written when the fit ends)
            self._check_pending = True
            self._trainer = trainer  # a checkpoint saved before the epoch ends reads it
            return
        self._guarded_check(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._check_pending and self.advisor is not None:
            self._check_pending = False
            self._guarded_check(trainer)

    def _guarded_check(self, trainer: Any) -> None:
        try:
            self._check(trainer)
        except Exception as exc:
            if self.strict:
                raise
            self._warn_once("check", f"training-advisor skipped a check: {type(exc).__name__}: "
                                     f"{exc} (training goes on; pass strict=True to raise).")

    def _guarded(self, action: Any, trainer: Any) -> None:
        try:
            action(trainer)
        except Exception as exc:
            if self.strict:
                raise
            self._warn_once(action.__name__, f"training-advisor could not read the learning-rate "
                                             f"plan: {type(exc).__name__}: {exc}; the schedule is "
                                             f"read from the logged rate instead (training goes "
                                             f"on).")
            if self.advisor is not None and isinstance(self.advisor.lr_plan, LrPlan):
                self.advisor.set_lr_plan(None)
            self._planned_for = self._scheduler_ids(trainer)  # do not try again every epoch

    # ------------------------------------------------------------------ learning-rate plan
    @staticmethod
    def _scheduler_ids(trainer: Any) -> tuple[int, ...]:
        return tuple(id(c.scheduler) for c in getattr(trainer, "lr_scheduler_configs", None) or [])

    def _plan_changed(self, trainer: Any) -> bool:
        """The schedulers were replaced, or the rate no longer follows the plan (changed by
        hand, or a scheduler that was changed mid-run)."""
        if self._planned_for is None or self._planned_for != self._scheduler_ids(trainer):
            return True
        plan = self.advisor.lr_plan
        if not isinstance(plan, LrPlan) or self._lr is None:
            return False
        at = trainer.current_epoch + 1 if self.unit == "epoch" else trainer.global_step + 1
        planned = plan.rate_at(at)
        return not math.isclose(planned, self._lr, rel_tol=0.02, abs_tol=1e-12)

    def _plan(self, trainer: Any) -> None:
        """Read the trainer's schedulers into the advisor's plan, from now to the budget."""
        self._planned_for = self._scheduler_ids(trainer)
        if self.unit == "step" and self.advisor.max_steps is None:
            self.advisor.max_steps = float(trainer.estimated_stepping_batches)
            self.budget = self.advisor.max_steps
        if self.budget is None:
            return  # no budget (max_epochs=-1): nothing to plan up to
        plan = plan_from_trainer(trainer, self.unit, self.budget, self.param_group)
        old = self.advisor.lr_plan
        if isinstance(plan, LrPlan) and isinstance(old, LrPlan):
            plan = old.merged(plan)
        self.advisor.set_lr_plan(plan)
        if self._writer is not None and self is self._group[0]:  # the run's: written once
            self._log_plan(plan)

    def _log_plan(self, plan: LrPlan | PlateauRule) -> None:
        if isinstance(plan, PlateauRule):
            text = (f"{plan.source}(factor={plan.factor:g}, patience={plan.patience}, "
                    f"cooldown={plan.cooldown}, min_lr={plan.min_lr:g})")
        else:
            text = plan.source or "constant"
            for step, rate in zip(plan.steps, plan.rates, strict=True):
                self._writer.submit({"advisor/planned_lr": rate}, step=int(step))
        self._writer.submit(tags={"advisor.lr_plan": text})

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._end_fit(trainer)
        if self._writer is not None and self is self._group[-1]:  # the last to share it
            if self._writer.close(timeout=10.0, status="FAILED"):
                self._keep_unwritten(trainer)
            self._forget_writers()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if (self.advisor is not None and self.advice is None and trainer.is_global_zero
                and "check" not in self._warned):  # a skipped check already said why
            self._warn_once("no_check", (
                f"training-advisor gave no advice: no validation check logged "
                f"{self.monitor!r} during this fit (no validation dataloader, "
                f"limit_val_batches=0, or the budget ended before the first check)."))
        self._end_fit(trainer)
        if self._writer is not None:
            self._finish(trainer, "KILLED" if self.pruned else "FINISHED")

    def _finish(self, trainer: Any, status: str) -> None:
        """Write the final advice; the last callback sharing the run closes it with ``status``,
        keeping on disk (and naming) whatever the server could not take."""
        try:
            self._write_final(trainer)
        except Exception as exc:
            if self.strict:
                raise
            self._warn_once("final", f"training-advisor could not write its final advice: {exc}")
        if self is not self._group[-1]:  # the last callback sharing the run closes it
            return
        unwritten = self._writer.close(timeout=30.0, status=status)
        if unwritten:
            run = self._writer.run_id
            kept = self._keep_unwritten(trainer)
            self._warn_once("unwritten", (
                f"training-advisor could not write to MLflow "
                f"{f'run {run}' if run else 'at ' + self._writer.server}: "
                f"{unwritten.metrics} metric value(s), {unwritten.tags} tag(s) and artifacts "
                f"{unwritten.artifacts} are not written ({self._writer.last_error}). "
                + (f"They are kept in {kept}: `advisor flush {kept}` writes them (and ends the "
                   f"run) once the server answers. " if kept else "")
                + "The final advice is in callback.advice and callback.history."))
        self._forget_writers()

    def _keep_unwritten(self, trainer: Any) -> Path | None:
        """Save what the writer could not write under the trainer's ``default_root_dir``
        (``advisor_unwritten/``), for ``advisor flush``; ``None`` if that failed too."""
        try:
            folder = Path(getattr(trainer, "default_root_dir", None) or ".") / "advisor_unwritten"
            return self._writer.save_unwritten(folder, self.experiment_name, self.run_name)
        except Exception as exc:  # a full disk must not end the fit with a traceback
            if self.strict:
                raise
            self._warn_once("keep", f"training-advisor could not keep the unwritten advice on "
                                    f"disk either: {exc}")
            return None

    def state_dict(self) -> dict[str, Any]:
        pending = None
        if self._check_pending and self._trainer is not None:  # saved at validation end
            pending = {"step": self._trainer.current_epoch + 1,
                       "metrics": self._read_metrics(self._trainer)}
        return {"advisor": None if self.advisor is None else self.advisor.state_dict(),
                "history": list(self.history), "stop_reason": self.stop_reason,
                "pending_check": pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.advisor is None or not self._fitting:  # before this fit's setup
            self._pending_state = dict(state_dict)  # restored in setup, once the budget is known
        else:
            self._restore_or_start_afresh(state_dict)

    def _restore_or_start_afresh(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state; one that cannot be read (another version's, an edited
        file) costs the history before the resume, with one warning, never the training."""
        try:
            self._restore(state)
        except Exception as exc:
            if self.strict:
                raise
            self._pending_state = None
            self.advisor = self._new_advisor()
            self.advice, self.history, self.stop_reason = None, [], None
            self._warn_once("restore", f"training-advisor could not restore its state from the "
                                       f"checkpoint ({type(exc).__name__}: {exc}); its history "
                                       f"starts again at the resumed check (training goes on; "
                                       f"pass strict=True to raise).")

    # ------------------------------------------------------------------ the rule
    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("advisor") is not None:
            self.advisor.load_state_dict(state["advisor"])
            self.advice = self.advisor.advice
        self.history = list(state.get("history", []))
        self.stop_reason = state.get("stop_reason")
        self._pending_state = None
        pending = state.get("pending_check")
        if pending is not None:  # the check of the epoch the checkpoint was saved in
            self._record(self.advisor.update(pending["step"], pending["metrics"]))

    def _check(self, trainer: Any) -> None:
        metrics = self._read_metrics(trainer, consume=True)
        stale = self.monitor not in metrics and self.monitor in trainer.callback_metrics
        # decide once: rank 0's values go to every rank, so the advice is identical everywhere
        metrics, stale = trainer.strategy.broadcast((metrics, stale), src=0)
        if stale:  # validation ran, but did not log the monitor this time: no check to judge
            return
        if self.monitor not in metrics:
            raise KeyError(f"monitored metric {self.monitor!r} was not logged at this check; "
                           f"metrics present: {', '.join(sorted(metrics)) or 'none'}.")
        if self.unit == "step" and self.advisor.max_steps is None:
            self.advisor.max_steps = float(trainer.estimated_stepping_batches)
            self.budget = self.advisor.max_steps
        step = trainer.current_epoch + 1 if self.unit == "epoch" else trainer.global_step
        advice = self.advisor.update(step, metrics)
        self._record(advice)
        if self._writer is not None:
            self._log(trainer, metrics, advice)
        self._act(trainer, metrics, advice)

    def _act(self, trainer: Any, metrics: dict[str, float], advice: Advice) -> None:
        """What the advice does to the trainer (the same on every rank)."""
        if self.action == "stop" and advice.should_stop and self._can_stop(trainer):
            self._stop(trainer, advice.step, advice.reason)

    def _stop(self, trainer: Any, step: float, reason: str, announce: bool = True) -> None:
        self.stop_reason = reason
        self.stopped_step = step
        trainer.should_stop = True
        # said when the fit ends: a ModelCheckpoint saves this epoch after this callback's
        # check, so only then can the message name the file of a best check that is this one
        self._announce = trainer.is_global_zero and announce

    def keep(self, trainer: Any = None) -> str:
        """The checkpoint to keep, in words: the best check in the advisor's and Lightning's
        numbering, its value and the file a ``ModelCheckpoint`` on the monitored metric saved
        (else how to keep it): ``epoch 40 (Lightning's epoch=39), val_loss 0.0767:
        checkpoints/epoch=39-step=400.ckpt``."""
        if self.advice is None:
            raise RuntimeError("no advice yet: nothing to keep before the first check.")
        checkpoint, missing = self._checkpoint_state(trainer)
        return story.keep_text(self.advice, self.unit, origin=self._origin(),
                               checkpoint=checkpoint, missing=missing)

    @property
    def best_checkpoint(self) -> str | None:
        """The file a ``ModelCheckpoint`` on the monitored metric saved at the best check
        (``None`` if none did): the checkpoint to load."""
        return self._checkpoint_state()[0]

    def _checkpoint_state(self, trainer: Any = None) -> tuple[str | None, bool]:
        """The best check's file (or ``None``) and whether the trainer is known to keep none:
        read from the trainer while it fits, remembered once the fit has ended."""
        trainer = trainer if trainer is not None else self._fit_trainer
        if trainer is None or self.advice is None:
            return self._kept
        checkpoint = self._best_checkpoint(trainer, self.advice)
        return checkpoint, checkpoint is None and not self._watching(trainer)

    def _end_fit(self, trainer: Any) -> None:
        """Remember the checkpoint to keep, and let go of the trainer (and its model)."""
        self._fitting = False
        self._kept = self._checkpoint_state(trainer)
        self._fit_trainer = None
        self._last_trainer = None if trainer is None else id(trainer)
        if self._announce and self.stopped_step is not None and self.advice is not None:
            self._announce = False
            where = story.at(self.stopped_step, self.unit, self._origin())
            if self.pruned:
                print(f"training-advisor pruned the trial at {where}: {self.stop_reason}")
            else:
                print(f"training-advisor stopped training at {where}: {self.stop_reason}\n"
                      f"Keep {self.keep()}")

    def _record(self, advice: Advice) -> None:
        self.advice = advice
        if self.history and self.history[-1]["step"] == advice.step:
            self.history[-1] = advice_history_row(advice)
        else:
            self.history.append(advice_history_row(advice))

    def _read_metrics(self, trainer: Any, consume: bool = False) -> dict[str, float]:
        """The values logged since the last check (``consume``: and remember them as read).

        ``callback_metrics`` keeps a metric's last value until it is logged again; Lightning
        puts a new tensor there each time one is logged (its epoch aggregate, or the step's
        value), so a value that is the very object read at the last check is stale: it was not
        logged at this check and is not judged again.
        """
        values: dict[str, float] = {}
        current = trainer.callback_metrics
        for key, value in current.items():
            if self._read.get(key) is value:
                continue
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                continue  # not a scalar: not a curve the advisor can judge
        if consume:
            self._read = dict(current)  # holding them: no identity is reused meanwhile
        if self._lr is not None and "lr" not in values:
            values["lr"] = self._lr
        return values

    def _can_stop(self, trainer: Any) -> bool:
        """Stop only once Trainer(min_epochs/min_steps) is met, so no early decision latches."""
        min_epochs = trainer.fit_loop.min_epochs or 0
        min_steps = trainer.fit_loop.min_steps or 0
        return trainer.current_epoch + 1 >= min_epochs and trainer.global_step >= min_steps

    # ------------------------------------------------------------------ MLflow (rank 0 only)
    def _join_run(self, trainer: Any) -> None:
        """The callbacks of a fit that log to MLflow share one run and one writer (the first
        one's); with several, each names its metrics, tags and artifacts by its monitor."""
        group = [cb for cb in trainer.callbacks
                 if isinstance(cb, AdvisorCallback) and cb.log_to_mlflow] or [self]
        monitors = [cb.monitor for cb in group]
        self._group = group
        self._prefix = "" if len(group) < 2 else self.monitor if monitors.count(
            self.monitor) == 1 else f"{self.monitor}-{group.index(self) + 1}"
        if self is group[0]:
            self._start_writer(trainer)
        else:  # set up after the first: Lightning calls the callbacks in their order
            self._writer, self._logger_run_name = group[0]._writer, group[0]._logger_run_name

    def _name(self, key: str) -> str:
        """This callback's name for a metric (``advisor/...``), tag (``advisor....``) or
        artifact: as is, or under its monitor when several callbacks share the run."""
        if not self._prefix:
            return key
        for sep in ("/", "."):
            if key.startswith(f"advisor{sep}"):
                return f"advisor{sep}{self._prefix}{sep}{key[len('advisor') + 1:]}"
        return f"{self._prefix}/{key}"

    def _note(self, trainer: Any, final: bool = False) -> str:
        """The run description: this callback's advice, or every sharing callback's
        (``final``: with what each one's stop saved or cost)."""
        notes = []
        for cb in self._group:
            if cb.advice is None:
                continue
            checkpoint = cb._best_checkpoint(trainer, cb.advice)
            notes.append(advice_markdown(
                cb.advice, cb.unit, cb.budget, checkpoint, pruned=cb.pruned,
                origin=cb._origin(), missing=checkpoint is None and not cb._watching(trainer),
                analysis=cb.analysis() if final else None))
        return "\n\n".join(notes)

    def _start_writer(self, trainer: Any) -> None:
        logger = self._mlflow_logger(trainer)
        if logger is not None:
            self._logger_run_name = getattr(logger, "_run_name", None)  # for the report title
            def connect() -> tuple[Any, str, bool]:
                client, run_id = logger.experiment, logger.run_id
                mark_training_experiment(client, logger.experiment_id)
                return client, run_id, False  # the logger's run: the logger ends it
        else:
            self._log_trainer_metrics = True

            def connect() -> tuple[Any, str, bool]:
                return resolve_run(self.tracking_uri, self.experiment_name, self.run_name)
        self._writer = MlflowWriter(connect, server=getattr(logger, "_tracking_uri", None)
                                    or self.tracking_uri
                                    or (None if logger is not None else default_tracking_uri()))

    @staticmethod
    def _mlflow_logger(trainer: Any) -> Any:
        for logger in getattr(trainer, "loggers", []):
            if type(logger).__name__ == "MLFlowLogger":
                return logger
        return None

    def _log(self, trainer: Any, metrics: dict[str, float], advice: Advice) -> None:
        # on the trainer's axis: the step its logger gave this check's validation metrics, so
        # advisor/* overlays val_loss in MLflow's charts; a run the callback writes the
        # trainer's metrics to itself is on the callback's axis (epochs or global steps)
        own_axis = self._group[0]._log_trainer_metrics or self._logged_step is None
        step = int(advice.step) if own_axis else self._logged_step
        values = {self._name(f"advisor/{k}"): v for k, v in self._advice_metrics(advice).items()
                  if v is not None and math.isfinite(v)}
        if self._log_trainer_metrics:  # the run's own values: written once, by the first
            values.update({k: v for k, v in metrics.items() if math.isfinite(v)})
        elif self._lr is not None and math.isfinite(self._lr) and self is self._group[0]:
            values["advisor/lr"] = self._lr  # the rate the check saw, for `advisor report`
        self._writer.submit(values, step=step, tags=self._tags(trainer, advice))

    def _tags(self, trainer: Any, advice: Advice, final: bool = False) -> dict[str, str]:
        """The run's ``advisor.*`` tags and description for ``advice``: one story for both
        (:mod:`advisor.dashboards.story`); ``final``: with the stop's saving or cost."""
        checkpoint = self._best_checkpoint(trainer, advice)
        own = story.summary_tags(advice, self.unit, pruned=self.pruned, checkpoint=checkpoint)
        stop_tag = f"advisor.suggested_stop_{self.unit}"
        if stop_tag in own:
            self._stop_tag_written = True
        elif self._stop_tag_written:  # no longer one: say so rather than keep a stale one
            own[stop_tag] = "none"
        tags = {self._name(k): v for k, v in own.items() if k != "advisor.unit"}
        tags.update({"mlflow.note.content": self._note(trainer, final), "advisor.unit": self.unit})
        if self.budget is not None:
            tags["advisor.budget"] = step_text(self.budget)
        return tags

    def _origin(self) -> str | None:
        """Lightning counts epochs from 0 (``epoch=54-step=550.ckpt`` is this epoch 55)."""
        return "Lightning's" if self.unit == "epoch" else None

    def _watching(self, trainer: Any) -> list[Any]:
        """The checkpoint callbacks that keep the best of the monitored metric."""
        return [cb for cb in getattr(trainer, "checkpoint_callbacks", [])
                if getattr(cb, "monitor", None) == self.monitor]

    def _advice_metrics(self, advice: Advice) -> dict[str, float | None]:
        row = self.history[-1]  # this check's row, recorded just before
        return {"should_stop": float(advice.should_stop), "trend_pvalue": row["trend_pvalue"],
                "slope": row["slope"], "forecast": row["forecast"],
                "forecast_low": row["forecast_low"], "forecast_high": row["forecast_high"],
                "expected_gain": row["expected_gain"], "best_value": row["best_value"]}

    def _best_checkpoint(self, trainer: Any, advice: Advice) -> str | None:
        """The best_model_path of a ModelCheckpoint on the same metric, if it saved the best."""
        for cb in getattr(trainer, "checkpoint_callbacks", []):
            if getattr(cb, "monitor", None) != self.monitor:
                continue
            path = getattr(cb, "best_model_path", "")
            score = getattr(cb, "best_model_score", None)
            if path and score is not None and advice.best_value is not None and math.isclose(
                    float(score), advice.best_value, rel_tol=1e-6, abs_tol=1e-12):
                return path
        return None

    def _write_final(self, trainer: Any) -> None:
        if self.advice is None:
            return
        # checkpoints of the last epoch are saved after the last check: name the best one now
        checkpoint = self._best_checkpoint(trainer, self.advice)
        watching = self._watching(trainer)
        if watching and checkpoint is None:
            self._warn_once("checkpoint", f"the best {self.unit} "
                                          f"({step_text(self.advice.best_step)}) was "
                                          f"never checkpointed by {type(watching[0]).__name__}.")
        self._writer.submit(tags=self._tags(trainer, self.advice, final=True))
        final = self.advice.to_dict()
        final["stopped"] = self.stop_reason is not None
        final["unit"] = self.unit
        self._writer.submit_artifact(self._name("advice.json"), json.dumps(final, indent=2))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.history[0]))
        writer.writeheader()
        writer.writerows(self.history)
        self._writer.submit_artifact(self._name("advice_history.csv"), buffer.getvalue())
        if self.report:
            try:
                html, png = self._render_report()
            except Exception as exc:  # a picture must never cost the run its advice
                if self.strict:
                    raise
                self._warn_once("report", f"training-advisor could not draw its report "
                                          f"({type(exc).__name__}: {exc}); the advice is logged "
                                          f"without it.")
            else:
                self._writer.submit_artifact(self._name(PLOT_ARTIFACT), png)
                self._writer.submit_artifact(self._name(REPORT_ARTIFACT), html)

    # ------------------------------------------------------------------ report
    def analysis(self) -> RunAnalysis:
        """The curves and the advice so far, as the plots and reports show them."""
        if self.advisor is None or self.advice is None:
            raise RuntimeError("no advice yet: the report needs at least one validation check.")
        history = self.advisor.history
        run_id = self.run_id or (self._writer.run_id if self._writer is not None else None)
        train = None if self.train_metric is None else history.values(self.train_metric)
        checkpoint, missing = self._checkpoint_state()
        return RunAnalysis(
            run_id=run_id or "",
            run_name=(self._logger_run_name or self.run_name or self._shown_run_name()
                      or run_id or "this run"),
            monitor=self.monitor, mode=self.mode, train_metric=self.train_metric,
            unit=self.unit, steps=tuple(float(s) for s in history.steps),
            values=tuple(float(v) for v in history.values(self.monitor)),
            train_values=None if train is None else tuple(float(v) for v in train),
            advice=self.advice, history=tuple(self.history), budget=self.budget,
            pruned=self.pruned, running=self._fitting,
            origin=self._origin(), checkpoint=checkpoint, checkpoint_missing=missing)

    def _render_report(self) -> tuple[str, bytes]:
        analysis = self.analysis()
        png = run_plot_png(analysis)
        return run_report_html(analysis, png), png

    def log_report(self) -> None:
        """Log ``advice_report.html`` and ``advice_plot.png`` for the advice so far, now.

        The picture is drawn in the calling thread (about half a second). During training the
        upload goes through the background writer (training does not wait on the server);
        after ``fit`` the files are written at once to the run the callback wrote to, and errors
        raise. On ranks other than zero (which do not log) it does nothing.
        """
        if not self._rank_zero:
            return
        html, png = self._render_report()
        if self._writer is not None:
            self._writer.submit_artifact(self._name(PLOT_ARTIFACT), png)
            self._writer.submit_artifact(self._name(REPORT_ARTIFACT), html)
            return
        if self.run_id is None:
            raise RuntimeError("no MLflow run to log the report to (log_to_mlflow=False, not "
                               "rank zero, or training has not started).")
        import tempfile
        from pathlib import Path

        from ..tracking import connect

        client = connect(self._tracking_uri)
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / PLOT_ARTIFACT).write_bytes(png)
            (Path(folder) / REPORT_ARTIFACT).write_text(html, encoding="utf-8")
            client.log_artifacts(self.run_id, folder, self._prefix or None)

    def _shown_run_name(self) -> str | None:
        """The run's name in MLflow, as the writer read it (a nested run, a made-up name)."""
        writer_name = None if self._writer is None else self._writer.run_name
        return writer_name or self._run_name_seen

    def _forget_writers(self) -> None:
        """Every sharing callback keeps where the writer wrote (for :meth:`log_report`) and the
        run's name, then drops it."""
        for cb in self._group:
            if cb._writer is not None:
                cb._run_name_seen = cb._writer.run_name or cb._run_name_seen
                cb.run_id = cb._writer.run_id or cb.run_id
                cb._tracking_uri = cb._writer.tracking_uri or cb._tracking_uri
                cb._writer = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, AdvisorWarning, stacklevel=2)
