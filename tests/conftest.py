"""Shared helpers: curve generators and a driver that feeds curves to an Advisor."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st
from processes import free_port

from advisor import Advice, Advisor

FAMILIES = ("saturating", "power", "u_shape", "flat", "linear")


def make_curve(family: str, n: int, *, scale: float = 1.0, rate: float = 0.2,
               noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A loss-like curve of ``n`` checks (epochs 1..n) from a parametric family, plus noise.

    ``noise`` is the standard deviation of the Gaussian noise as a fraction of ``scale``.
    """
    e = np.arange(1, n + 1, dtype=float)
    if family == "saturating":
        y = 0.3 + scale * np.exp(-rate * e)
    elif family == "power":
        y = 0.2 + scale * e ** -(0.3 + 2 * rate)
    elif family == "u_shape":
        m = max(3.0, n / 2)
        y = 0.5 + scale * rate * ((e - m) / n) ** 2
    elif family == "flat":
        y = np.full(n, 0.5)
    elif family == "linear":
        y = 1.0 + scale - scale * rate * e / n
    else:
        raise ValueError(family)
    rng = np.random.default_rng(seed)
    return y + rng.normal(0.0, noise * scale, n)


@st.composite
def curves(draw, min_n: int = 8, max_n: int = 45):
    """Non-degenerate curves: a parametric family, a rate, a length, noise and a budget."""
    family = draw(st.sampled_from(FAMILIES))
    n = draw(st.integers(min_n, max_n))
    rate = draw(st.floats(0.05, 1.0))
    noise = draw(st.sampled_from([0.0, 0.001, 0.01, 0.05]))
    seed = draw(st.integers(0, 2**16))
    budget = draw(st.sampled_from([None, 1.0, 1.5, 3.0]))
    y = make_curve(family, n, rate=rate, noise=noise, seed=seed)
    max_steps = None if budget is None else float(math.ceil(budget * n))
    return y, max_steps


def feed(advisor: Advisor, values: Sequence[float], steps: Sequence[float] | None = None,
         extra: Mapping[str, Sequence[float]] | None = None,
         stop: bool = False) -> list[Advice]:
    """Feed ``values`` of the advisor's monitor (and ``extra`` metrics) check by check.

    Returns every advice; with ``stop``, stops after the first advice that says to stop.
    """
    steps = range(1, len(values) + 1) if steps is None else steps
    out = []
    for i, (step, value) in enumerate(zip(steps, values, strict=True)):
        metrics = {advisor.monitor: value}
        if extra:
            metrics.update({name: column[i] for name, column in extra.items()})
        advice = advisor.update(step, metrics)
        out.append(advice)
        if stop and advice.should_stop:
            break
    return out


def first_stop(advices: Sequence[Advice]) -> Advice | None:
    return next((a for a in advices if a.should_stop), None)


@pytest.fixture
def saturating_curve() -> np.ndarray:
    """0.3 + exp(-e/4) for epochs 1..60: saturates within about 30 epochs."""
    e = np.arange(1, 61, dtype=float)
    return 0.3 + np.exp(-e / 4)


# ---------------------------------------------------------------------------- MLflow server
class MlflowServer:
    """A real ``mlflow server`` on a free loopback port, SQLite backend and artifacts in ``root``.

    ``stop()`` and ``start()`` take it down and bring it back on the same port with the same
    backend (for outage tests); ``url`` is what clients pass as the tracking URI.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "server.log"
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        """Start the server (no-op if it runs) and wait until ``/health`` answers."""
        if self.running:
            return
        mlflow_exe = Path(sys.executable).parent / "mlflow"
        command = [str(mlflow_exe), "server",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--artifacts-destination", str(self.root / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.log_path, "ab") as log:
            # its own process group: stop() ends the server and its uvicorn worker together
            self._proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server (its whole process group) and wait until the port is closed."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        # the uvicorn worker may outlive its parent for a moment: wait for the port to close
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _port_open(self.port):
            time.sleep(0.1)
        self._proc = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""




def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    """One real MLflow tracking server for the whole test session (started on first use)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------- PostgreSQL server
@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the whole test session (started on first use); yields it
    (``.url`` is a SQLAlchemy URL of an empty database). See ``tests/postgres.py``."""
    from postgres import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------- report experiment
class ReportExperiment:
    """An experiment on the session's server for the report tests: one real Lightning fit with
    the callback (``"lightning"``) and runs logged by hand without it (``"saturating"``, named
    ``<script>alert(1)</script>``; ``"overfitting"``, with an ``epoch`` metric at global steps;
    ``"improving"``; ``"no-val"``, which has no ``val_loss``)."""

    def __init__(self, url: str, name: str, experiment_id: str, runs: dict[str, str],
                 callback) -> None:
        self.url, self.name, self.experiment_id = url, name, experiment_id
        self.runs, self.callback = runs, callback


def _log_by_hand(client, experiment_id: str, run_name: str,
                 series: Mapping[str, Sequence[float]], steps: Sequence[int]) -> str:
    """A run logged with plain MlflowClient calls, as any framework would: no advisor."""
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, run_name=run_name)
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now + i, int(s)) for key, values in series.items()
               for i, (s, v) in enumerate(zip(steps, values, strict=True))]
    for start in range(0, len(metrics), 900):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 900], synchronous=True)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@pytest.fixture(scope="session")
def report_experiment(mlflow_server) -> ReportExperiment:
    """Built once per session: one Lightning fit (about 20 epochs) and four hand-logged runs."""
    import uuid
    import warnings

    import pytorch_lightning as pl
    import torch
    from lightning_models import LinearRegression, loaders
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from advisor import AdvisorCallback

    name = f"report-{uuid.uuid4().hex[:8]}"
    train, val = loaders()
    torch.manual_seed(0)
    logger = MLFlowLogger(experiment_name=name, tracking_uri=mlflow_server.url,
                          run_name="lightning-fit")
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop")
    trainer = pl.Trainer(max_epochs=60, logger=logger, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*", DeprecationWarning)
        trainer.fit(LinearRegression(lr=0.05), train, val)
    runs = {"lightning": logger.run_id}

    client = MlflowClient(mlflow_server.url)
    experiment_id = logger.experiment_id
    rng = np.random.default_rng(0)
    e = np.arange(1, 61)
    sat = 0.3 + np.exp(-e / 4) + rng.normal(0, 0.001, e.size)
    runs["saturating"] = _log_by_hand(client, experiment_id, "<script>alert(1)</script>",
                                      {"val_loss": sat, "train_loss": sat - 0.05}, e)
    e = np.arange(1, 41)  # falls until epoch 15, then rises: overfitting from epoch 15
    over = np.where(e <= 15, 1 - 0.03 * e, 0.55 + 0.02 * (e - 15))
    over = over + np.random.default_rng(0).normal(0, 0.003, e.size)
    runs["overfitting"] = _log_by_hand(client, experiment_id, "overfit",
                                       {"val_loss": over, "train_loss": 1 - 0.024 * e,
                                        "epoch": e}, 10 * e)  # global steps, epochs from 1
    e = np.arange(1, 31)
    runs["improving"] = _log_by_hand(client, experiment_id, "still-improving",
                                     {"val_loss": 1 / np.sqrt(e), "train_loss": 0.9 / np.sqrt(e)},
                                     e)
    runs["no-val"] = _log_by_hand(client, experiment_id, "no-val",
                                  {"loss": 1 / e, "accuracy": 1 - 1 / e}, e)
    return ReportExperiment(mlflow_server.url, name, experiment_id, runs, callback)


# ---------------------------------------------------------------------------- browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
BROWSER_OUTPUT = Path(__file__).resolve().parent / "output"  # screenshots (ignored by git)


@pytest.fixture(scope="module")
def browser():
    """Debian's ``chromium`` through Playwright, headless, without a sandbox (Playwright never
    downloads a browser of its own here)."""
    import shutil

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "the browser tests need Debian's chromium: apt-get install -y chromium"
    BROWSER_OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
