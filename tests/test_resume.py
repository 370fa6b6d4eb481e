"""A Lightning run that crashes and is resumed from its last checkpoint keeps its advice history.

The run is deterministic (fixed data, no shuffling, seeded initialisation), so an uninterrupted run
of the same length is the reference: after ``trainer.fit(..., ckpt_path=last)`` with a new
Trainer and a new AdvisorCallback, the advice must continue as if nothing had happened, with no
check lost or counted twice. (The core ``Advisor.state_dict`` JSON round trip is covered in
``test_advisor.py``.)
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback

MAX_EPOCHS = 30


class SimulatedCrash(RuntimeError):
    """Stands for an out-of-memory error, a preemption, a node failure."""


class CrashAt(pl.Callback):
    """Raises in the middle of training epoch ``epoch`` (1-based), after some batches."""

    def __init__(self, epoch: int, batch: int = 2) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch + 1 == self.epoch and batch_idx == self.batch:
            raise SimulatedCrash(f"crash in epoch {self.epoch}, batch {batch_idx}")


def _blobs(seed: int, n: int) -> TensorDataset:
    centers = torch.randn(3, 10, generator=torch.Generator().manual_seed(0)) * 0.8
    y = torch.arange(n) % 3
    x = centers[y] + torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, y)


class Blobs(pl.LightningModule):
    """Three overlapping Gaussian blobs: val_loss falls, then overfits; val_acc levels off."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(_blobs(1, 320), batch_size=64, shuffle=False)

    def val_dataloader(self):
        return DataLoader(_blobs(2, 300), batch_size=300)


def _fit(callbacks, ckpt_dir: Path | None = None, ckpt_path: Path | None = None,
         logger=False) -> pl.Trainer:
    callbacks = list(callbacks)
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        max_epochs=MAX_EPOCHS, callbacks=callbacks, logger=logger, deterministic=True,
        enable_checkpointing=ckpt_dir is not None, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")  # resuming into it
        trainer.fit(Blobs(), ckpt_path=ckpt_path)
    return trainer


def _crash_then_resume(tmp_path: Path, make_callbacks, crash_epoch: int,
                       resumed_callbacks_order=lambda cbs: cbs, tracking_uri: str | None = None):
    """Train until a crash in ``crash_epoch``; resume from last.ckpt with NEW callbacks (and,
    with ``tracking_uri``, a new MLFlowLogger continuing the same MLflow run)."""
    ckpt_dir = tmp_path / "ckpt"
    first = make_callbacks()
    first_logger = False if tracking_uri is None else MLFlowLogger(
        experiment_name="resume", tracking_uri=tracking_uri)
    with pytest.raises(SimulatedCrash):
        _fit([*first, CrashAt(crash_epoch)], ckpt_dir, logger=first_logger)
    last = ckpt_dir / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == crash_epoch - 2  # 0-based, done
    resumed = make_callbacks()
    resumed_logger = False if tracking_uri is None else MLFlowLogger(
        experiment_name="resume", tracking_uri=tracking_uri, run_id=first_logger.run_id)
    trainer = _fit(resumed_callbacks_order(resumed), ckpt_dir, ckpt_path=last,
                   logger=resumed_logger)
    return first, first_logger, resumed, trainer, last


def _mlflow_steps(client: MlflowClient, run_id: str, name: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, name))


def _state_text(callback: AdvisorCallback) -> str:
    return json.dumps(callback.advisor.state_dict(), sort_keys=True)


def _advise(monitor: str = "val_loss", mode: str = "min", action: str = "advise",
            log_to_mlflow: bool = False) -> AdvisorCallback:
    return AdvisorCallback(monitor, mode, train_metric="train_loss" if mode == "min" else None,
                           action=action, log_to_mlflow=log_to_mlflow)


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted advise-mode run with an advisor on val_loss and one on val_acc."""
    callbacks = [_advise("val_loss"), _advise("val_acc", "max")]
    trainer = _fit(callbacks)
    assert trainer.current_epoch == MAX_EPOCHS
    return {cb.monitor: cb for cb in callbacks}


CRASH_EPOCH = 13  # last.ckpt holds epochs 1-12; epoch 13 is half trained when it crashes


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same run, crashed in epoch 13 and resumed with new callbacks in the other order; the
    val_loss advisor logs to MLflow, and the resumed MLFlowLogger continues the same run."""
    tmp_path = tmp_path_factory.mktemp("resume")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, first_logger, callbacks, trainer, last = _crash_then_resume(
        tmp_path, lambda: [_advise("val_loss", log_to_mlflow=True), _advise("val_acc", "max")],
        CRASH_EPOCH, resumed_callbacks_order=lambda cbs: cbs[::-1], tracking_uri=uri)
    return {"first": {cb.monitor: cb for cb in first},
            "resumed": {cb.monitor: cb for cb in callbacks}, "trainer": trainer, "last": last,
            "tracking_uri": uri, "run_id": first_logger.run_id}


def _steps(callback: AdvisorCallback) -> list[float]:
    return [row["step"] for row in callback.history]


def _verdicts(callback: AdvisorCallback) -> list[str]:
    return [row["verdict"] for row in callback.history]


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_resumed_run_continues_the_checks_and_verdicts_without_loss_or_repeat(
        resumed, reference, monitor):
    assert resumed["trainer"].current_epoch == MAX_EPOCHS
    assert _steps(resumed["first"][monitor]) == list(range(1, CRASH_EPOCH))
    callback, ref = resumed["resumed"][monitor], reference[monitor]
    assert _steps(callback) == _steps(ref) == list(range(1, MAX_EPOCHS + 1))
    assert callback.advisor.history.steps.tolist() == _steps(ref)
    assert _verdicts(callback) == _verdicts(ref)
    assert callback.advice.verdict == ref.advice.verdict


def test_resumed_run_logs_every_check_once_to_the_same_mlflow_run(resumed, reference):
    client, run_id = MlflowClient(resumed["tracking_uri"]), resumed["run_id"]
    # the crashed run's writer thread finishes its queue in the background: wait for it
    deadline = time.monotonic() + 30
    while (len(_mlflow_steps(client, run_id, "advisor/should_stop")) < MAX_EPOCHS
           and time.monotonic() < deadline):
        time.sleep(0.1)
    # once each, on the trainer's axis: at the global steps the logger gave val_loss
    val_steps = sorted(set(_mlflow_steps(client, run_id, "val_loss")))
    assert len(val_steps) == MAX_EPOCHS
    for name in ("advisor/should_stop", "advisor/best_value"):
        assert _mlflow_steps(client, run_id, name) == val_steps, name
    ref = reference["val_loss"]
    assert client.get_run(run_id).data.tags["advisor.verdict"] == ref.advice.verdict.value


def test_advisors_on_two_monitors_restore_their_own_state_from_one_checkpoint(
        resumed, reference):
    on_loss, on_acc = resumed["resumed"]["val_loss"], resumed["resumed"]["val_acc"]
    assert on_loss.state_key != on_acc.state_key
    saved = torch.load(resumed["last"], weights_only=False)["callbacks"]
    assert saved[on_loss.state_key]["advisor"]["monitor"] == "val_loss"
    assert saved[on_acc.state_key]["advisor"]["monitor"] == "val_acc"
    assert saved[on_acc.state_key]["advisor"]["mode"] == "max"
    for callback in (on_loss, on_acc):  # resumed in the other order: restored by key
        monitor = callback.monitor
        ref = reference[monitor]
        assert callback.advisor.monitor == monitor
        assert [row["best_value"] for row in callback.history] == [
            row["best_value"] for row in ref.history], monitor
        assert (callback.advisor.history.values(monitor).tolist()
                == ref.advisor.history.values(monitor).tolist()), monitor


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_resumed_run_continues_exactly_as_an_uninterrupted_run(resumed, reference, monitor):
    """Deterministic training: the resumed advisor must hold what the uninterrupted one holds
    (README: state_dict/load_state_dict "resume a run exactly"), metrics and advice alike."""
    callback, ref = resumed["resumed"][monitor], reference[monitor]
    assert callback.advisor.history.metrics == ref.advisor.history.metrics
    for name in ref.advisor.history.metrics:
        assert (callback.advisor.history.to_dict()[name]
                == ref.advisor.history.to_dict()[name]), name
    assert callback.history == ref.history
    assert _state_text(callback) == _state_text(ref)


def test_resumed_stop_mode_run_stops_at_the_same_epoch_with_a_pending_confirmation(tmp_path):
    reference = _advise("val_acc", "max", action="stop")
    trainer = _fit([reference])
    stop = int(reference.stopped_step)
    assert reference.advice.verdict.value == "plateau"
    assert trainer.current_epoch == stop < MAX_EPOCHS
    # the check before the stop saw a plateau waiting for its confirmation
    assert reference.history[stop - 2]["reason"].startswith("Looks flat, to be confirmed")

    # last.ckpt holds the checks up to the pending one; the crash is in the confirming epoch
    _, _, (resumed,), trainer, _ = _crash_then_resume(
        tmp_path, lambda: [_advise("val_acc", "max", action="stop")], crash_epoch=stop)
    assert resumed.stopped_step == stop
    assert trainer.current_epoch == stop
    assert resumed.stop_reason == reference.stop_reason
    assert _verdicts(resumed) == _verdicts(reference)


def test_a_reused_callback_resumed_from_a_checkpoint_continues_its_history(tmp_path, reference):
    """The same callback object crashes and resumes from last.ckpt: the checkpoint, not the
    new fit, decides what it holds (a new fit without a checkpoint starts afresh)."""
    same = [_advise("val_loss")]
    first, _, resumed, trainer, _ = _crash_then_resume(tmp_path, lambda: same, CRASH_EPOCH)
    (callback,) = resumed
    assert callback is first[0] and trainer.current_epoch == MAX_EPOCHS
    ref = reference["val_loss"]
    assert callback.history == ref.history
    assert callback.advisor.history.to_dict() == ref.advisor.history.to_dict()
    assert callback.advice.to_dict() == ref.advice.to_dict()
