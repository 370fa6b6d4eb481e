"""AdvisorCallback against a real MLflow tracking server (the session's ``mlflow_server``).

Each test trains a tiny linear model for a few CPU epochs on data made here with torch, then
reads back through ``MlflowClient`` what a user would see in MLflow: tags, the run
description, ``advisor/`` metric histories and the ``advice.json`` / ``advice_history.csv``
artifacts. The outage tests stop the real server mid-run and bring it back.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from lightning_models import LinearRegression, loaders
from mlflow import MlflowClient
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback, AdvisorWarning, Verdict

VERDICTS = {v.value for v in Verdict}
STOPPING = {Verdict.PLATEAU.value, Verdict.OVERFITTING.value, Verdict.DIVERGED.value}
WRITE_FAILED = "could not write to MLflow"  # the writer's outage / unwritten warnings

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*LeafSpec.*:DeprecationWarning",
)


def fit(callbacks: list, *, lr: float = 0.05, max_epochs: int = 12, logger=False,
        epoch_sleep: float = 0.0, **trainer_kwargs) -> pl.Trainer:
    torch.manual_seed(0)
    # Lightning's root folder is the working directory by default: keep what a fit leaves
    # there (advice kept during an outage) out of the checkout
    trainer_kwargs.setdefault("default_root_dir", tempfile.mkdtemp(prefix="advisor-fit-"))
    trainer = pl.Trainer(max_epochs=max_epochs, logger=logger, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=any(isinstance(c, ModelCheckpoint)
                                                  for c in callbacks),
                         num_sanity_val_steps=0, **trainer_kwargs)
    train, val = loaders()
    trainer.fit(LinearRegression(lr=lr, epoch_sleep=epoch_sleep), train, val)
    return trainer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_failures(caught) -> list[str]:
    return [str(w.message) for w in caught
            if issubclass(w.category, AdvisorWarning) and WRITE_FAILED in str(w.message)]


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_text(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> str:
    dst = tmp_path / f"artifacts-{run_id}"
    dst.mkdir(exist_ok=True)
    return Path(client.download_artifacts(run_id, name, str(dst))).read_text()


def assert_advice_in_run(client: MlflowClient, run_id: str, callback: AdvisorCallback,
                         checks: int, tmp_path: Path,
                         steps: list[int] | None = None) -> dict[str, str]:
    """``steps``: where the advisor/* metrics are (default: 1..checks, the callback's own
    axis, where it also logs the trainer's metrics)."""
    """The advice a user looks for in the run: tags, description, metrics, artifacts."""
    tags = client.get_run(run_id).data.tags
    verdict = tags["advisor.verdict"]
    assert verdict in VERDICTS
    assert verdict == callback.advice.verdict.value
    assert tags["advisor.reason"] == callback.advice.reason
    assert len(tags["advisor.reason"]) > 20 and callback.monitor in tags["advisor.reason"]
    assert tags["advisor.best_epoch"] == f"{callback.advice.best_step:g}"
    # no empty chip: the suggested stop is there when the advice has one
    stop = callback.advice.suggested_stop_step
    assert tags.get("advisor.suggested_stop_epoch") == (None if stop is None else f"{stop:g}")
    assert verdict.upper() in tags["mlflow.note.content"].splitlines()[0]
    # one value per validation check, none lost and none twice
    for key in ("advisor/should_stop", "advisor/best_value"):
        assert metric_steps(client, run_id, key) == (steps or list(range(1, checks + 1))), key
    best = client.get_metric_history(run_id, "advisor/best_value")
    assert max(best, key=lambda m: m.step).value == pytest.approx(callback.advice.best_value)
    advice = json.loads(artifact_text(client, run_id, "advice.json", tmp_path))
    assert advice["verdict"] == verdict
    assert advice["stopped"] == (callback.stop_reason is not None)
    rows = list(csv.DictReader(artifact_text(client, run_id, "advice_history.csv",
                                             tmp_path).splitlines()))
    assert [float(r["step"]) for r in rows] == [float(s) for s in range(1, checks + 1)]
    assert rows[-1]["verdict"] == verdict
    return tags


# ---------------------------------------------------------------------------- where it writes
def test_mlflow_logger_run_gets_the_advice(mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    logger = MLFlowLogger(experiment_name=unique("logger"), tracking_uri=mlflow_server.url)
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit([callback], logger=logger, max_epochs=8)
    assert write_failures(caught) == []
    assert trainer.current_epoch == 8 and len(callback.history) == 8
    # on the trainer's axis: the global steps at which the logger put val_loss, so the
    # advisor's curves overlay it in MLflow's charts
    val_steps = metric_steps(client, logger.run_id, "val_loss")
    assert len(val_steps) == 8 and val_steps != list(range(1, 9))
    tags = assert_advice_in_run(client, logger.run_id, callback, checks=8, tmp_path=tmp_path,
                                steps=val_steps)
    for key in ("advisor/forecast", "advisor/forecast_low", "advisor/forecast_high"):
        assert set(metric_steps(client, logger.run_id, key)) <= set(val_steps), key
    # it trained its whole budget: the description says so, not "keep training, epoch 8 of 8"
    first_line = tags["mlflow.note.content"].splitlines()[0]
    assert "(completed its budget of 8 epochs" in first_line and "keep training" not in first_line
    # the logger's run, not a second one
    runs = client.search_runs([logger.experiment_id])
    assert [r.info.run_id for r in runs] == [logger.run_id]


def test_without_mlflow_logger_a_new_run_holds_advice_and_trainer_metrics(
        mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    name = unique("no-logger")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss",
                               tracking_uri=mlflow_server.url, experiment_name=name,
                               run_name="tiny")
    csv_logger = CSVLogger(tmp_path)
    trainer = fit([callback], logger=csv_logger, max_epochs=8)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "tiny"
    checks = trainer.current_epoch
    assert checks == 8
    assert_advice_in_run(client, run.info.run_id, callback, checks=checks, tmp_path=tmp_path)
    # the trainer's curves, each value at the epoch it belongs to (as the CSVLogger has them)
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("val_loss", "train_loss"):
        expected = {int(r["epoch"]) + 1: float(r[key]) for r in rows if r.get(key)}
        assert sorted(expected) == list(range(1, checks + 1)), key
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert logged == pytest.approx(expected), (key, logged, expected)


def test_a_run_the_callback_created_is_finished_when_training_ends(mlflow_server):
    client = MlflowClient(mlflow_server.url)
    name = unique("finished")
    fit([AdvisorCallback(tracking_uri=mlflow_server.url, experiment_name=name)], max_epochs=3)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "FINISHED"


@pytest.fixture
def fluent_tracking_uri(mlflow_server, monkeypatch, tmp_path):
    """``mlflow.set_tracking_uri(server)`` for one test, undone afterwards."""
    monkeypatch.chdir(tmp_path)  # advice sent to the default store (./mlflow.db) stays here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # as set_tracking_uri does
    mlflow.set_tracking_uri(mlflow_server.url)
    yield mlflow_server.url
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_active_run_gets_the_advice(fluent_tracking_uri, tmp_path):
    client = MlflowClient(fluent_tracking_uri)
    experiment = mlflow.set_experiment(unique("active"))
    default_before = client.get_experiment_by_name("training-advisor")
    runs_before = (0 if default_before is None
                   else len(client.search_runs([default_before.experiment_id])))
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss")
    with mlflow.start_run(run_name="the-active-run") as run:
        trainer = fit([callback], max_epochs=6)
    assert_advice_in_run(client, run.info.run_id, callback, checks=trainer.current_epoch,
                         tmp_path=tmp_path)
    # its report is titled by the run's name, as MLflow shows it, not by its id
    assert callback.analysis().run_name == "the-active-run"
    assert "<h1>the-active-run</h1>" in artifact_text(client, run.info.run_id,
                                                      "advice_report.html", tmp_path)
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [
        run.info.run_id]
    # and no stray run in the callback's default experiment
    default_after = client.get_experiment_by_name("training-advisor")
    runs_after = (0 if default_after is None
                  else len(client.search_runs([default_after.experiment_id])))
    assert runs_after == runs_before


# ---------------------------------------------------------------------------- stopping
def test_stop_mode_stops_on_a_plateau_and_advise_mode_does_not(mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    name = unique("stop")
    stopper = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop",
                              tracking_uri=mlflow_server.url, experiment_name=name,
                              run_name="stop")
    trainer = fit([stopper], lr=0.0, max_epochs=30)  # lr=0: the curve is flat from epoch 1
    assert trainer.should_stop
    assert trainer.current_epoch < 30
    assert stopper.stop_reason and "val_loss" in stopper.stop_reason
    assert stopper.stopped_step == trainer.current_epoch
    assert stopper.advice.should_stop
    run_ids = {r.info.run_name: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name(name).experiment_id])}
    tags = assert_advice_in_run(client, run_ids["stop"], stopper,
                                checks=trainer.current_epoch, tmp_path=tmp_path)
    assert tags["advisor.verdict"] in STOPPING
    assert tags["advisor.suggested_stop_epoch"] != ""
    assert "STOP" in tags["mlflow.note.content"].splitlines()[0].upper()
    # no ModelCheckpoint kept the best epoch: the description says so and how to keep it
    best = int(stopper.advice.best_step)
    assert f"at epoch {best} (Lightning's epoch={best - 1})" in tags["mlflow.note.content"]
    assert 'not saved: ModelCheckpoint(monitor="val\\_loss", mode="min"' in tags[
        "mlflow.note.content"]
    assert "advisor.best_checkpoint" not in tags

    adviser = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="advise",
                              tracking_uri=mlflow_server.url, experiment_name=name,
                              run_name="advise")
    trainer = fit([adviser], lr=0.0, max_epochs=30)
    assert trainer.current_epoch == 30
    assert adviser.stop_reason is None
    assert adviser.advice.should_stop  # it says so, but only advises
    run_ids = {r.info.run_name: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name(name).experiment_id])}
    tags = assert_advice_in_run(client, run_ids["advise"], adviser, checks=30,
                                tmp_path=tmp_path)
    assert tags["advisor.verdict"] in STOPPING


def test_stop_mode_waits_for_min_epochs():
    # where the advice first says stop on this flat curve (an advise-mode run trains on)
    adviser = AdvisorCallback(monitor="val_loss", log_to_mlflow=False)
    fit([adviser], lr=0.0, max_epochs=40)
    first = next(int(h["step"]) for h in adviser.history if h["should_stop"])
    assert first + 4 < 40
    callback = AdvisorCallback(monitor="val_loss", action="stop", log_to_mlflow=False)
    trainer = fit([callback], lr=0.0, max_epochs=40, min_epochs=first + 4)
    assert [h["should_stop"] for h in callback.history][first - 1:] == [True] * 5
    assert trainer.current_epoch == first + 4  # not before min_epochs, and right at it
    assert callback.stopped_step == first + 4


class SeparableClassifier(pl.LightningModule):
    """Logistic regression on two well-separated Gaussian blobs: validation accuracy reaches
    1.0 within a few epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_stop_mode_stops_a_classifier_whose_accuracy_reached_its_ceiling():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(256) % 2
    x = torch.randn(256, 2, generator=g) + 3.0 * (2 * y[:, None] - 1)
    train = DataLoader(TensorDataset(x[:192], y[:192]), batch_size=32)
    val = DataLoader(TensorDataset(x[192:], y[192:]), batch_size=64)
    callback = AdvisorCallback(monitor="val_acc", mode="max", train_metric="train_loss",
                               action="stop", log_to_mlflow=False)
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=60, logger=False, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0,
                         default_root_dir=tempfile.mkdtemp(prefix="advisor-fit-"))
    trainer.fit(SeparableClassifier(), train, val)
    perfect = [h for h in callback.history if h["best_value"] == 1.0]
    # stopped at the first check with a perfect score, or at the fewest checks for any verdict
    # if it came sooner, far from the budget, keeping the first perfect epoch
    assert perfect and callback.stopped_step == max(perfect[0]["step"],
                                                    callback.history[5]["step"])
    assert callback.stopped_step < 40 and trainer.current_epoch < 40
    assert callback.history[-1]["suggested_stop_step"] == perfect[0]["best_step"]
    assert callback.stop_reason.startswith("Nothing left to gain: val_acc reached 1")


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("lr", [0.0, 0.05], ids=["best-early", "best-last"])
def test_best_checkpoint_is_named_in_the_run(mlflow_server, tmp_path, lr, capsys):
    client = MlflowClient(mlflow_server.url)
    name = unique("ckpt")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_loss", mode="min")
    # a 5% tolerance: the regression's validation loss is noisy next to 1% of its value
    callback = AdvisorCallback(monitor="val_loss", action="stop", min_improvement=0.05,
                               tracking_uri=mlflow_server.url, experiment_name=name)
    trainer = fit([callback, checkpoint], lr=lr, max_epochs=30)
    assert callback.stop_reason is not None
    assert checkpoint.best_model_path
    assert float(checkpoint.best_model_score) == pytest.approx(callback.advice.best_value)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    tags = run.data.tags
    assert tags.get("advisor.best_checkpoint") == checkpoint.best_model_path
    assert checkpoint.best_model_path in tags["mlflow.note.content"]
    # the file is Lightning's epoch of the advisor's best epoch, and the callback names it
    best = int(callback.advice.best_step)
    assert Path(checkpoint.best_model_path).name.startswith(f"epoch={best - 1}-")
    assert callback.best_checkpoint == checkpoint.best_model_path
    assert callback.keep() == (f"epoch {best} (Lightning's epoch={best - 1}), val_loss "
                               f"{callback.advice.best_value:.4g}: {checkpoint.best_model_path}")
    # the stop is said once, with the file, even when the best check is the one that stopped
    # (ModelCheckpoint saves it after the advisor's check)
    out = capsys.readouterr().out
    assert out.count("training-advisor stopped training at epoch") == 1
    assert f"Keep {callback.keep()}" in out
    assert trainer.current_epoch == callback.stopped_step


# ---------------------------------------------------------------------------- missing monitor
def test_missing_monitor_warns_with_the_metrics_present(mlflow_server):
    callback = AdvisorCallback(monitor="no_such_metric", tracking_uri=mlflow_server.url,
                               experiment_name=unique("missing"))
    with pytest.warns(AdvisorWarning, match="no_such_metric") as record:
        trainer = fit([callback], max_epochs=3)
    assert trainer.current_epoch == 3
    messages = [str(w.message) for w in record if "no_such_metric" in str(w.message)]
    assert len(messages) == 1  # once, not at every check
    assert "metrics present:" in messages[0]
    assert all(name in messages[0] for name in ("lr", "train_loss", "val_loss"))
    assert callback.advice is None


def test_missing_monitor_raises_when_strict():
    callback = AdvisorCallback(monitor="no_such_metric", strict=True, log_to_mlflow=False)
    with pytest.raises(KeyError, match="no_such_metric"):
        fit([callback], max_epochs=3)


# ---------------------------------------------------------------------------- outages
class ServerOutage(pl.Callback):
    """Stops the real server after epoch ``down_at``, between two checks (once the server has
    the advice of the checks so far); restarts it (in the background, as it takes a while)
    after ``up_at``; waits for it after ``wait_at`` so the rest of the run trains with the
    server back."""

    def __init__(self, server, experiment_name: str, down_at: int, up_at: int,
                 wait_at: int, callback: AdvisorCallback) -> None:
        self.server, self.experiment_name, self.callback = server, experiment_name, callback
        self.down_at, self.up_at, self.wait_at = down_at, up_at, wait_at
        self.restart: threading.Thread | None = None
        self.epochs_while_down: list[int] = []
        self.error: BaseException | None = None

    def _start(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _wait_until_written(self, checks: int, timeout: float = 30.0) -> None:
        client = MlflowClient(self.server.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name(self.experiment_name)
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and len(client.get_metric_history(
                    runs[0].info.run_id, "advisor/should_stop")) >= checks:
                return
            time.sleep(0.05)
        raise AssertionError(f"the first {checks} checks never reached the server")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch == self.down_at:
            self._wait_until_written(epoch)
            self.server.stop()
        elif self.down_at < epoch <= self.up_at:
            self.epochs_while_down.append(epoch)
        if epoch == self.up_at:
            # the writer writes at most every 10 s: keep the server down until it has tried
            deadline = time.monotonic() + 30.0
            while self.callback._writer.last_error is None and time.monotonic() < deadline:
                time.sleep(0.1)
            self.restart = threading.Thread(target=self._start, daemon=True)
            self.restart.start()
        if epoch == self.wait_at and self.restart is not None:
            self.restart.join(timeout=120)


def test_server_outage_mid_run_loses_nothing(mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    name = unique("outage")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss",
                               tracking_uri=mlflow_server.url, experiment_name=name)
    outage = ServerOutage(mlflow_server, name, down_at=3, up_at=7, wait_at=8, callback=callback)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = fit([callback, outage], max_epochs=12, epoch_sleep=0.3)
    finally:
        if outage.restart is not None:
            outage.restart.join(timeout=120)
        mlflow_server.start()  # whatever happened, the next tests get their server back
    assert outage.error is None
    assert trainer.current_epoch == 12
    assert outage.epochs_while_down == [4, 5, 6, 7]  # it trained on while the server was down
    failures = write_failures(caught)
    assert len(failures) == 1, failures  # one warning for the outage, no "not written" at the end
    assert "training goes on" in failures[0]
    assert any("reached MLflow again" in str(w.message) for w in caught)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert_advice_in_run(client, run.info.run_id, callback, checks=12, tmp_path=tmp_path)
    assert metric_steps(client, run.info.run_id, "val_loss") == list(range(1, 13))


class ServerGone(pl.Callback):
    """Stops the real server after epoch ``down_at`` (once it holds the checks so far) and
    leaves it down until the run has ended."""

    def __init__(self, outage: ServerOutage) -> None:
        self.outage = outage

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.outage.down_at:
            self.outage._wait_until_written(self.outage.down_at)
            self.outage.server.stop()


def test_a_run_cut_off_by_an_outage_is_kept_on_disk_and_flushed_when_the_server_is_back(
        mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    name = unique("cut-off")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss",
                               tracking_uri=mlflow_server.url, experiment_name=name)
    gone = ServerGone(ServerOutage(mlflow_server, name, down_at=3, up_at=0, wait_at=0,
                                   callback=callback))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit([callback, gone], max_epochs=8, default_root_dir=tmp_path)
    finally:
        mlflow_server.start()
    (unwritten,) = [m for m in write_failures(caught) if "not written" in m]
    kept = sorted((tmp_path / "advisor_unwritten").glob("*.json"))
    assert len(kept) == 1 and str(kept[0]) in unwritten and "advisor flush" in unwritten
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "RUNNING"  # the server was down when the run ended
    out = subprocess.run([sys.executable, "-m", "advisor.cli", "flush", str(kept[0].parent)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert run.info.run_id in out.stdout and "ended as FINISHED" in out.stdout
    assert not kept[0].exists()  # written, so no longer kept
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # nothing lost: every check's advice, the tags and the artifacts, as if never cut off
    assert_advice_in_run(client, run.info.run_id, callback, checks=8, tmp_path=tmp_path)
    again = subprocess.run([sys.executable, "-m", "advisor.cli", "flush", str(kept[0].parent)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to write" in again.stdout


def test_flush_of_a_bad_file_or_to_an_unreachable_server_is_one_line_and_keeps_the_file(
        tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({
        "version": 1, "tracking_uri": url, "run_id": "0123", "created_run": True,
        "final_status": "FINISHED", "experiment_name": "x", "run_name": None,
        "metrics": [["val_loss", 0.5, 1, 1]], "tags": {}, "artifacts": {}}))
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    for path, said in ((kept, url.split("//")[1]), (bad, "not a file of advice kept")):
        out = subprocess.run([sys.executable, "-m", "advisor.cli", "flush", str(path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and said in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and path.exists()


def test_unreachable_server_does_not_stop_training(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    callback = AdvisorCallback(monitor="val_loss", action="stop", tracking_uri=url,
                               experiment_name="never")
    threads_before = set(threading.enumerate())
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit([callback], lr=0.0, max_epochs=30, default_root_dir=tmp_path)
    elapsed = time.monotonic() - start
    assert callback.stop_reason is not None and trainer.current_epoch < 30
    assert callback.advice.verdict.value in STOPPING  # the advice is there, in Python
    # a guard against hanging on MLflow's own retries (minutes), not a benchmark: the callback
    # waits at most its close timeout (30 s) for a server that might come back
    assert elapsed < 60, f"fit took {elapsed:.0f} s against an unreachable server"
    failures = write_failures(caught)
    outage = [m for m in failures if "training goes on" in m]
    unwritten = [m for m in failures if "not written" in m]
    assert len(outage) == 1 and len(unwritten) == 1 and len(failures) == 2, failures
    for message in (outage[0], unwritten[0]):  # why: the server and what went wrong
        assert url.split("//")[1] in message and "refused" in message, message
    assert "metric value(s)" in unwritten[0] and "advice.json" in unwritten[0]
    assert "callback.advice" in unwritten[0]
    # nothing is lost: all of it is kept on disk, for `advisor flush` when a server answers
    (kept,) = (tmp_path / "advisor_unwritten").glob("*.json")
    assert str(kept) in unwritten[0]
    record = json.loads(kept.read_text())
    assert record["run_id"] is None and record["experiment_name"] == "never"
    checks = len(callback.history)
    assert sum(m[0] == "advisor/should_stop" for m in record["metrics"]) == checks
    assert "advice.json" in record["artifacts"]
    assert not any("reached MLflow again" in str(w.message) for w in caught)
    # the writer gives up once the run has ended: no thread left retrying (and warning) later
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
            t.name == "advisor-mlflow" for t in set(threading.enumerate()) - threads_before):
        time.sleep(0.1)
    assert not [t for t in set(threading.enumerate()) - threads_before
                if t.name == "advisor-mlflow"]


@pytest.mark.parametrize("health", [False, True], ids=["never-answers", "stalls-mid-way"])
def test_a_server_that_never_answers_does_not_hold_training_and_is_named(health, monkeypatch):
    """A server that accepts connections and never answers: training goes on, and the warning
    at the end names the server and what was not written (it ended in '(None)')."""
    from processes import SilentServer

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")  # MLflow's own setting: a short test
    with SilentServer(health=health) as server:
        callback = AdvisorCallback(monitor="val_loss", tracking_uri=server.url,
                                   experiment_name="never")
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = fit([callback], max_epochs=6)
        elapsed = time.monotonic() - start
    assert trainer.current_epoch == 6 and len(callback.history) == 6
    assert elapsed < 60, f"fit took {elapsed:.0f} s against a server that never answers"
    failures = write_failures(caught)
    unwritten = [m for m in failures if "not written" in m]
    assert len(unwritten) == 1, failures
    assert f"127.0.0.1:{server.port}" in unwritten[0] and "did not answer" in unwritten[0]
    assert "(None)" not in unwritten[0] and "run None" not in unwritten[0], unwritten[0]
    assert "metric value(s)" in unwritten[0] and "advice.json" in unwritten[0]


# ---------------------------------------------------------------------------- reuse
def test_a_reused_callback_starts_a_fresh_history_on_a_new_fit(mlflow_server, tmp_path):
    """The second fit ran to its end, yet its advice.json said "stopped": true and its
    advice_history.csv held the first fit's rows."""
    client = MlflowClient(mlflow_server.url)
    name = unique("reused")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop",
                               tracking_uri=mlflow_server.url, experiment_name=name)
    first = fit([callback], lr=0.0, max_epochs=30)  # flat: the advisor stops it
    assert callback.stop_reason is not None and first.current_epoch < 30
    first_run = callback.run_id
    second = fit([callback], lr=0.05, max_epochs=5)  # too short to stop
    assert second.current_epoch == 5
    assert callback.stop_reason is None and callback.stopped_step is None
    assert [row["step"] for row in callback.history] == [1, 2, 3, 4, 5]
    assert callback.advisor.history.steps.tolist() == [1, 2, 3, 4, 5]
    assert callback.run_id != first_run  # a run of its own, as the first fit had
    assert_advice_in_run(client, callback.run_id, callback, checks=5, tmp_path=tmp_path)


# ---------------------------------------------------------------------------- stale values
class EveryOtherEpoch(LinearRegression):
    """Validation runs every epoch, but val_loss is logged at odd epochs only (1-based)."""

    def validation_step(self, batch, batch_idx):
        if self.current_epoch % 2 == 0:
            super().validation_step(batch, batch_idx)


def test_a_value_not_logged_at_this_check_is_not_judged_again(mlflow_server):
    """callback_metrics keeps the last val_loss: the checks of even epochs re-read it as new."""
    name = unique("stale")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss",
                               tracking_uri=mlflow_server.url, experiment_name=name)
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=12, logger=False, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=2)
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(EveryOtherEpoch(lr=0.05), train, val)
    assert trainer.current_epoch == 12
    checks = [1, 3, 5, 7, 9, 11]
    assert [row["step"] for row in callback.history] == checks
    history = callback.advisor.history
    assert history.steps[history.logged("val_loss")].tolist() == checks
    assert len(set(history.values("val_loss")[history.logged("val_loss")].tolist())) == 6
    assert not [str(w.message) for w in caught if issubclass(w.category, AdvisorWarning)]
    client = MlflowClient(mlflow_server.url)
    for key in ("val_loss", "advisor/best_value"):  # one value per check, none repeated
        assert metric_steps(client, callback.run_id, key) == checks, key


# ---------------------------------------------------------------------------- outage-safe set-up
class EpochClock(pl.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ends.append(time.monotonic())


class StopServerAfter(pl.Callback):
    def __init__(self, server, epoch: int) -> None:
        self.server, self.epoch = server, epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            self.server.stop()


def test_training_does_not_wait_on_a_server_that_goes_down(mlflow_server, tmp_path):
    """The README's outage-safe set-up: no MLFlowLogger (it writes synchronously and holds
    training while the server is down); the callback creates the run and writes the trainer's
    metrics and its advice from its background writer. With the server gone after epoch 3,
    every later epoch takes its own time (0.2 s of sleep, a few ms of training), not MLflow's."""
    name = unique("down")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss",
                               tracking_uri=mlflow_server.url, experiment_name=name)
    clock = EpochClock()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = fit([callback, StopServerAfter(mlflow_server, 3), clock], max_epochs=10,
                          epoch_sleep=0.2, logger=CSVLogger(tmp_path))
    finally:
        mlflow_server.start()
    assert trainer.current_epoch == 10 and len(callback.history) == 10
    while_down = [b - a for a, b in zip(clock.ends[2:], clock.ends[3:], strict=False)]
    assert len(while_down) == 7 and max(while_down) < 1.0, while_down  # epochs 4-10
    assert any("training goes on" in m for m in write_failures(caught))


# ---------------------------------------------------------------------------- two callbacks
class WithScore(LinearRegression):
    """Also logs val_score = -val_loss: a metric to maximise."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("val_loss", loss)
        self.log("val_score", -loss)


@pytest.mark.parametrize("with_logger", [True, False], ids=["mlflow-logger", "own-run"])
def test_two_callbacks_share_one_run_under_their_own_names(mlflow_server, tmp_path,
                                                           with_logger):
    """Callbacks on val_loss (min) and val_score (max) logged 50 values of advisor/best_value
    at 25 steps, mixing both metrics; tags and advice.json came from one of them; without a
    logger one fit made two runs."""
    client = MlflowClient(mlflow_server.url)
    name = unique("two")
    on_loss = AdvisorCallback(monitor="val_loss", tracking_uri=mlflow_server.url,
                              experiment_name=name, run_name="both")
    on_score = AdvisorCallback(monitor="val_score", mode="max",
                               tracking_uri=mlflow_server.url, experiment_name=name,
                               run_name="both")
    logger = MLFlowLogger(experiment_name=name, tracking_uri=mlflow_server.url) \
        if with_logger else False
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=8, logger=logger, callbacks=[on_loss, on_score],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    train, val = loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(WithScore(lr=0.05), train, val)
    assert write_failures(caught) == []
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert len(runs) == 1  # one fit, one run
    run_id = runs[0].info.run_id
    assert on_loss.run_id == on_score.run_id == run_id
    tags = client.get_run(run_id).data.tags
    for cb in (on_loss, on_score):
        m = cb.monitor
        # one value per check, on the trainer's axis (the steps its own metrics are logged at)
        checks = metric_steps(client, run_id, m)
        assert len(checks) == 8
        for key in ("should_stop", "best_value"):
            assert metric_steps(client, run_id, f"advisor/{m}/{key}") == checks
        best = client.get_metric_history(run_id, f"advisor/{m}/best_value")
        assert max(best, key=lambda b: b.step).value == pytest.approx(cb.advice.best_value)
        assert tags[f"advisor.{m}.verdict"] == cb.advice.verdict.value
        assert tags[f"advisor.{m}.reason"] == cb.advice.reason
        advice = json.loads(artifact_text(client, run_id, f"{m}/advice.json", tmp_path))
        assert advice["monitor"] == m and advice["best_value"] == pytest.approx(
            cb.advice.best_value)
        rows = artifact_text(client, run_id, f"{m}/advice_history.csv", tmp_path).splitlines()
        assert len(rows) == 1 + 8
        listed = {a.path for a in client.list_artifacts(run_id, m)}
        assert {f"{m}/advice_report.html", f"{m}/advice_plot.png"} <= listed
        escaped = m.replace("_", "\\_")  # markdown
        assert f"best {escaped}" in tags["mlflow.note.content"]  # the description shows both
    run_level = {"advisor/lr", "advisor/planned_lr"}  # the trainer's, written once
    assert not any(k.startswith("advisor/") and k.count("/") == 1 and k not in run_level
                   for k in runs[0].data.metrics)  # no un-namespaced advice mixing the two
    assert "advisor.verdict" not in tags and tags["advisor.unit"] == "epoch"
    assert metric_steps(client, run_id, "val_loss") == list(range(1, 9)) or with_logger
