"""Writing advice to an MLflow run from a background thread, so training never waits on it.

One writer per run. ``submit`` only appends to an in-memory queue; a daemon thread merges what is
pending into ``log_batch`` calls within MLflow's limits. When the tracking server cannot be
reached, the writer warns once, keeps everything and retries with back-off; when the server is
back, it writes the backlog in order. ``close`` flushes with a time limit and reports what was
not written, so no logged data disappears silently.

MLflow's HTTP client retries a refused connection by itself for about four minutes
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``; the settings are
process-wide environment variables, so the writer does not change them). So that an outage is
seen, warned about and retried on the writer's own short schedule, the writer first checks that
an ``http(s)`` tracking server accepts connections and answers HTTP within
:func:`~advisor.tracking.answer_timeout` (unless a proxy is configured for it). A call that
hangs all the same (a server that stalls mid-way) is warned about from the training thread
once it has waited that long, and ``close`` names the server that did not answer.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..history import AdvisorWarning
from ..tracking import answer_timeout, default_tracking_uri
from ..tracking import check_reachable as _check_reachable

__all__ = ["Flushed", "MlflowWriter", "Unwritten", "flush_unwritten", "mark_training_experiment",
           "resolve_run"]

_MAX_METRICS, _MAX_TAGS, _MAX_TAG_CHARS = 1000, 100, 8000
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow's active run is per thread: the writer's thread sees the run active where it was made
_caller = threading.local()


@dataclass
class Unwritten:
    """What could not be written to MLflow by the end of the run."""

    metrics: int = 0
    tags: int = 0
    artifacts: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.metrics or self.tags or self.artifacts)


def resolve_run(tracking_uri: str | None, experiment_name: str, run_name: str | None):
    """Return ``(client, run_id, created)``: the active MLflow run, else a new run.

    A new run goes to ``experiment_name`` in ``tracking_uri`` (default: the environment's
    ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``); an experiment created here is tagged
    ``mlflow.experimentKind=custom_model_development`` so MLflow opens it as a training run.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    active = mlflow.active_run()
    active_id = active.info.run_id if active is not None else getattr(_caller, "run_id", None)
    if active_id is not None and tracking_uri is None:
        return MlflowClient(mlflow.get_tracking_uri()), active_id, False
    uri = tracking_uri or default_tracking_uri()
    _check_reachable(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        try:
            experiment_id = client.create_experiment(
                experiment_name, tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
        except MlflowException as exc:  # another process created it just now
            raced = experiment is None and exc.error_code == "RESOURCE_ALREADY_EXISTS"
            if not raced or (experiment := client.get_experiment_by_name(experiment_name)) is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    tags = {"mlflow.runName": run_name} if run_name else None
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    return client, run.info.run_id, True


def mark_training_experiment(client: Any, experiment_id: str) -> None:
    """Tag an experiment as model training (``mlflow.experimentKind``) unless it says otherwise,
    so MLflow 3.17 opens its runs in the training view rather than the GenAI view."""
    experiment = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")


def _active_run_id() -> str | None:
    """The MLflow run active in the calling thread (mlflow not imported: none)."""
    mlflow = sys.modules.get("mlflow")
    active = getattr(mlflow, "active_run", lambda: None)() if mlflow is not None else None
    return None if active is None else active.info.run_id


class MlflowWriter:
    """Background writer of metrics, tags and artifacts (text or bytes) to one MLflow run.

    Args:
        connect: returns ``(client, run_id, created)``; called in the background thread (and
            retried), so an unreachable server at start does not block or crash training.
            ``created`` says the run was made for this writer, which then also ends it.
        retry_seconds: the longest wait between two attempts while the server is down.
        min_interval: the shortest time between two writes: what is queued meanwhile goes in one
            batch (tags keep their latest value), so the cost is bounded per second of training,
            not per check; ``close`` writes at once.
    """

    def __init__(self, connect: Callable[[], tuple[Any, str, bool]], retry_seconds: float = 5.0,
                 min_interval: float = 10.0, server: str | None = None):
        self._connect = connect
        self._server = server  # where it writes, for messages until connected
        self._retry = retry_seconds
        self._min_interval = min_interval
        self._last_write = -float("inf")
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._metrics: list[tuple[str, float, int, int]] = []
        self._tags: dict[str, str] = {}
        self._artifacts: dict[str, str | bytes] = {}
        self._closing = False
        self._final_status: str | None = None
        self._abandoned = False
        self._outage = False
        self._busy_since: float | None = None  # when the MLflow call in flight began
        self._caller_run_id = _active_run_id()
        self._client: Any = None
        self.run_id: str | None = None
        self.run_name: str | None = None
        self.created_run = False
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="advisor-mlflow", daemon=True)
        self._thread.start()

    @property
    def tracking_uri(self) -> str | None:
        """The tracking URI of the run written to, once connected."""
        return getattr(self._client, "tracking_uri", None)

    @property
    def server(self) -> str:
        """Where the writer writes, for messages."""
        return self.tracking_uri or self._server or "the MLflow tracking server"

    def _no_answer(self) -> str | None:
        """``"... did not answer within N s"`` while an MLflow call has waited longer than a
        server's answer may take (:func:`~advisor.tracking.answer_timeout`), else ``None``."""
        since = self._busy_since
        waited = 0.0 if since is None else time.monotonic() - since
        if waited <= answer_timeout():
            return None
        return f"MLflow server {self.server} did not answer within {waited:.0f} s"

    def submit(self, metrics: dict[str, float] | None = None, step: int = 0,
               tags: dict[str, str] | None = None) -> None:
        """Queue metric values at ``step`` and tags (later tags replace earlier ones)."""
        now = int(time.time() * 1000)
        hung = self._no_answer()
        if hung and not self._outage:  # the writer's thread waits on it: say so, once
            self._outage = True
            self.last_error = hung
            warnings.warn(f"training-advisor could not write to MLflow ({hung}); training goes "
                          "on, the advice is kept and will be written when the server answers.",
                          AdvisorWarning, stacklevel=3)
        with self._lock:
            for key, value in (metrics or {}).items():
                self._metrics.append((key, float(value), now, int(step)))
            for key, value in (tags or {}).items():
                self._tags[key] = str(value)[:_MAX_TAG_CHARS]
        self._wake.set()

    def submit_artifact(self, name: str, content: str | bytes) -> None:
        """Queue an artifact: text (``advice.json``, a CSV, an HTML report) or bytes (a PNG)."""
        with self._lock:
            self._artifacts[name] = content
        self._wake.set()

    def close(self, timeout: float = 30.0, status: str | None = None) -> Unwritten:
        """Write what is pending (waiting at most ``timeout`` seconds) and stop the thread.

        With ``status`` (``"FINISHED"``, ``"FAILED"``), a run that ``connect`` created is then
        marked terminated, so it does not stay "Running" in the UI; other runs are left alone.
        """
        self._final_status = status
        self._closing = True
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            # what is reported as not written stays so: the thread gives up, and no late
            # write (or warning) comes from it after the run has ended
            self._abandoned = self._thread.is_alive()
            if self._abandoned and self._busy_since is not None:  # waiting on a hung server
                self.last_error = self._no_answer() or self.last_error
            return Unwritten(len(self._metrics), len(self._tags), sorted(self._artifacts))

    def save_unwritten(self, folder: Path, experiment_name: str | None = None,
                       run_name: str | None = None) -> Path | None:
        """After :meth:`close` gave up, keep what was not written in a JSON file in ``folder``
        (``None`` when everything was written), for :func:`flush_unwritten` (``advisor flush``)
        to write once the server answers: the run, its final status, and every metric value
        (with its own timestamp and step), tag and artifact. ``experiment_name`` and
        ``run_name`` say where to create the run if it was never created."""
        with self._lock:
            if not (self._metrics or self._tags or self._artifacts):
                return None
            record = {
                "version": 1, "tracking_uri": self.tracking_uri or self._server,
                "run_id": self.run_id, "created_run": self.created_run or self.run_id is None,
                "final_status": self._final_status, "experiment_name": experiment_name,
                "run_name": run_name, "metrics": [list(m) for m in self._metrics],
                "tags": dict(self._tags),
                "artifacts": {name: ({"base64": base64.b64encode(c).decode("ascii")}
                                     if isinstance(c, bytes) else {"text": c})
                              for name, c in self._artifacts.items()}}
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{self.run_id or 'new-run'}-{stamp}-{os.getpid()}.json"
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(path)
        return path

    # ------------------------------------------------------------------ background thread
    def _loop(self) -> None:
        _caller.run_id = self._caller_run_id
        delay = 0.25
        while True:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._abandoned:
                return
            wait = self._last_write + self._min_interval - time.monotonic()
            if wait > 0 and not self._closing:
                self._closed.wait(wait)  # coalesce what arrives meanwhile; close cuts it short
            try:
                self._busy_since = time.monotonic()
                self._write_pending()
                self._last_write = time.monotonic()
            except Exception as exc:  # server down, network, bad response: keep data, retry
                self._busy_since = None
                self.last_error = f"{type(exc).__name__}: {exc}"
                if not self._outage:
                    self._outage = True
                    warnings.warn(
                        f"training-advisor could not write to MLflow ({self.last_error}); "
                        "training goes on, the advice is kept and will be written when the "
                        "server is back.", AdvisorWarning, stacklevel=1)
                time.sleep(delay)
                delay = min(delay * 2, self._retry)
                self._wake.set()
                continue
            self._busy_since = None
            if self._outage:
                self._outage = False
                warnings.warn("training-advisor reached MLflow again; the kept advice is written.",
                              AdvisorWarning, stacklevel=1)
            delay = 0.25
            if self._closing:
                with self._lock:
                    if self._metrics or self._tags or self._artifacts:
                        continue
                if self._final_status is not None and self.created_run:
                    try:
                        self._busy_since = time.monotonic()
                        self._client.set_terminated(self.run_id, self._final_status)
                    except Exception as exc:  # retried like any write
                        self._busy_since = None
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        time.sleep(delay)
                        self._wake.set()
                        continue
                return

    def _write_pending(self) -> None:
        if self._client is None:
            self._client, self.run_id, self.created_run = self._connect()
            try:  # the name MLflow shows (given, or made up by MLflow), for the report's title
                self.run_name = self._client.get_run(self.run_id).info.run_name
            except Exception:  # a title is not worth a retry
                self.run_name = None
        else:
            _check_reachable(getattr(self._client, "tracking_uri", None))
        from mlflow.entities import Metric, RunTag

        while not self._abandoned:  # after close gave up, no late write
            with self._lock:
                metrics = self._metrics[:_MAX_METRICS]
                tag_items = list(self._tags.items())[:_MAX_TAGS]
                artifacts = list(self._artifacts.items())
            if not metrics and not tag_items and not artifacts:
                return
            if metrics or tag_items:
                self._client.log_batch(
                    self.run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in metrics],
                    tags=[RunTag(k, v) for k, v in tag_items], synchronous=True)
                with self._lock:
                    del self._metrics[: len(metrics)]
                    for key, value in tag_items:
                        if self._tags.get(key) == value:
                            del self._tags[key]
            for name, content in artifacts[:1]:
                if isinstance(content, bytes):
                    folder_name, _, file_name = name.rpartition("/")
                    with tempfile.TemporaryDirectory() as folder:
                        path = Path(folder) / file_name
                        path.write_bytes(content)
                        self._client.log_artifact(self.run_id, str(path), folder_name or None)
                else:
                    self._client.log_text(self.run_id, content, name)
                with self._lock:
                    if self._artifacts.get(name) is content:
                        del self._artifacts[name]


@dataclass
class Flushed:
    """What :func:`flush_unwritten` wrote."""

    path: Path
    tracking_uri: str | None
    run_id: str
    metrics: int
    tags: int
    artifacts: list[str]
    status: str | None


def flush_unwritten(path: str | Path) -> Flushed:
    """Write what :meth:`MlflowWriter.save_unwritten` kept, then end the run with its final
    status when the callback had created it (it stayed "Running" while the server was down),
    and delete the file. Every request is bounded (see :func:`~advisor.tracking.bounded_requests`
    for a process of its own); a server that does not answer raises and keeps the file.

    Raises:
        ValueError: the file is not one the writer saved.
        mlflow.exceptions.MlflowException, OSError: the server refused or did not answer.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("version") != 1:
            raise ValueError(f"version {record.get('version')!r}")
        metrics = [Metric(str(k), float(v), int(ts), int(step))
                   for k, v, ts, step in record["metrics"]]
        tags = [RunTag(str(k), str(v)) for k, v in record["tags"].items()]
        artifacts = record["artifacts"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a file of advice kept by training-advisor "
                         f"({exc}).") from exc
    uri = record.get("tracking_uri")
    run_id = record.get("run_id")
    if run_id is None:  # never created: create it now, where the callback would have
        client, run_id, _ = resolve_run(uri, record.get("experiment_name") or "Default",
                                        record.get("run_name"))
    else:
        _check_reachable(uri)
        client = MlflowClient(uri)
    for i in range(0, len(metrics), _MAX_METRICS):  # within MLflow's batch limits
        client.log_batch(run_id, metrics=metrics[i:i + _MAX_METRICS], synchronous=True)
    for i in range(0, len(tags), _MAX_TAGS):
        client.log_batch(run_id, tags=tags[i:i + _MAX_TAGS], synchronous=True)
    for name, content in artifacts.items():
        if "base64" in content:
            folder_name, _, file_name = name.rpartition("/")
            with tempfile.TemporaryDirectory() as folder:
                file = Path(folder) / file_name
                file.write_bytes(base64.b64decode(content["base64"]))
                client.log_artifact(run_id, str(file), folder_name or None)
        else:
            client.log_text(run_id, content["text"], name)
    status = record.get("final_status") if record.get("created_run") else None
    if status:
        client.set_terminated(run_id, status)
    path.unlink()
    return Flushed(path, getattr(client, "tracking_uri", uri), run_id, len(metrics), len(tags),
                   sorted(artifacts), status)
