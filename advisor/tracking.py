"""Reading runs from MLflow (and writing the advice back as tags), for ``advisor report`` and
``advisor analyze``.

Errors are one sentence each (:class:`TrackingError`): an unknown experiment or run, a store
that does not exist, a server that does not answer. MLflow is imported on first use.

The x-axis of a run's curves: MLflow's metric ``step``, unless the run also logged an ``epoch``
metric at the steps of the monitored metric, one check per epoch (as Lightning's
``MLFlowLogger`` does: it logs the global step as ``step`` and the epoch as a metric); then the
x-axis is epochs, counted from 1 (an ``epoch`` metric that starts at 0, as Lightning's does,
is shifted by one), so a report's epochs are the callback's epochs, and its checkpoints name
both numberings. Runs written by the callback without a logger are logged at step = epoch and
say so in their ``advisor.unit`` tag.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import ssl
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "REPORT_TAG", "MissingMetricError", "TrackingError", "answer_timeout", "bounded_requests",
    "check_reachable", "connect",
    "default_tracking_uri", "epoch_axis", "experiment_runs", "find_experiment", "get_run",
    "log_report_run", "mlflow_errors", "run_curves", "write_advice_tags",
]

REPORT_TAG = "advisor.report"  # marks the runs that hold an experiment report
_CONNECT_TIMEOUT = 5.0
_ANSWER_TIMEOUT = 15.0
_MAX_TAG_CHARS = 8000
_LR_NAMES = ("lr", "learning_rate", "learning-rate")
_CALLBACK_LR = "advisor/lr"  # the rate the callback read from the optimizer
_CALLBACK_PLAN = "advisor/planned_lr"  # the rates the callback planned from the schedulers
_STORED_INF = sys.float_info.max  # MLflow's SQL stores keep +-inf as +-1.797e308


class TrackingError(ValueError):
    """An MLflow run or experiment cannot be read; the message says which and why."""


class MissingMetricError(TrackingError):
    """A run does not have the metric the advisor should judge; the message lists its metrics."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the embedded store ``sqlite:///mlflow.db`` (as the
    callback uses)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def answer_timeout() -> float:
    """Seconds to wait for a tracking server's answer: MLflow's own
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` when it is set, else 15."""
    value = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "")
    try:
        seconds = float(value)
    except ValueError:
        return _ANSWER_TIMEOUT
    return seconds if math.isfinite(seconds) and seconds > 0 else _ANSWER_TIMEOUT


def check_reachable(uri: str | None, timeout: float = _CONNECT_TIMEOUT) -> None:
    """Raise ``ConnectionError`` at once if an ``http(s)`` tracking server refuses connections,
    and within :func:`answer_timeout` if it accepts them but does not answer HTTP (any answer
    to ``GET <uri>/health`` counts, an error status included).

    Without it, MLflow's own retries hold a call for minutes before it fails (a server that
    never answers: 8 tries of 120 s). Other stores, and servers reached through a configured
    proxy, are not checked.
    """
    parts = urllib.parse.urlsplit(uri or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":  # whether it answers, not whom: no certificate check
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout,
            context=ssl._create_unverified_context())  # noqa: S323
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    try:
        try:
            connection.connect()
        except OSError as exc:
            raise ConnectionError(f"MLflow server {parts.hostname}:{port} is unreachable "
                                  f"({exc})") from exc
        wait = answer_timeout()
        try:
            connection.sock.settimeout(wait)
            connection.request("GET", parts.path.rstrip("/") + "/health")
            connection.getresponse().read(1024)
        except (OSError, http.client.HTTPException) as exc:
            why = (f"did not answer within {wait:g} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
                   if isinstance(exc, TimeoutError) else f"did not answer HTTP ({exc})")
            raise ConnectionError(f"MLflow server {parts.hostname}:{port} accepted the "
                                  f"connection but {why}") from exc
    finally:
        connection.close()


@contextlib.contextmanager
def bounded_requests(retries: int = 2) -> Iterator[None]:
    """Within the block, every MLflow HTTP request waits at most :func:`answer_timeout` for an
    answer and is retried at most ``retries`` times (MLflow's defaults, 120 s and 7 retries,
    hold a call to a server that stopped answering for about 16 minutes), unless the user set
    ``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``. For a process of its
    own (the command line): MLflow reads these settings from the environment, process-wide."""
    wanted = {"MLFLOW_HTTP_REQUEST_TIMEOUT": f"{math.ceil(answer_timeout())}",
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    before = {key: os.environ.get(key) for key in wanted}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _local_store(uri: str) -> Path | None:
    """The file or folder of a local store (sqlite, file), which must exist to be read."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:  # a plain path (or a Windows drive)
        return Path(uri)
    return None


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    timed_out = re.match(r"API request to (\w+://[^/\s]+)\S* failed with .*(Read timed out|"
                         r"ReadTimeout)", text, re.DOTALL)
    if timed_out:  # MLflow's message is a paragraph of urllib3's retries: say what happened
        tries = 1 + int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") or 7)
        return (f"the MLflow server {timed_out.group(1)} did not answer within "
                f"{os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT') or 120} s ({tries} tries; "
                f"MLFLOW_HTTP_REQUEST_TIMEOUT and MLFLOW_HTTP_REQUEST_MAX_RETRIES set them)")
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into a one-line :class:`TrackingError` about ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(f"{what}: {_first_line(exc)}") from exc


def connect(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (default :func:`default_tracking_uri`), after
    checking that the store exists and is an MLflow store, or that the server answers, so
    nothing waits minutes, and a read never creates or changes a store: MLflow writes its
    schema into any database it opens (an empty file, a database of something else)."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    path = _local_store(uri)
    if path is not None and not path.exists():
        raise TrackingError(f"no MLflow store at {uri} ({path} does not exist); pass "
                            "--tracking-uri or set MLFLOW_TRACKING_URI.")
    if scheme == "sqlite":
        _check_sqlite_store(uri, path)
    elif path is not None and not path.is_dir():
        raise TrackingError(f"{path} is a file, not an MLflow file store; for an SQLite "
                            f"database, pass sqlite:///{path}.")
    elif scheme in _DATABASES:
        _check_database_store(uri)
    else:
        check_scheme(uri)
    check_reachable(uri)
    with mlflow_errors(f"cannot open the MLflow store at {uri}"):
        return MlflowClient(uri)


def check_scheme(uri: str) -> None:
    """Raise :class:`TrackingError` for a tracking URI whose scheme no MLflow store has (a typo
    that no retry will fix)."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()
    if _local_store(uri) is None and scheme not in (*_SERVERS, *_DATABASES, "sqlite"):
        raise TrackingError(f"unknown tracking URI scheme {scheme!r} in {uri}; expected "
                            "http(s)://HOST, sqlite:///FILE, postgresql://, mysql://, "
                            "mssql://, databricks, file:///FOLDER or a folder.")


_DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy URLs MLflow keeps runs in
_SERVERS = ("http", "https", "databricks", "databricks-uc", "uc")
_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_store(uri: str, path: Path | None) -> None:
    """An SQLite file that holds MLflow's tables, read without writing to it."""
    import sqlite3

    if path is None or str(path) in ("", ":memory:"):
        raise TrackingError(f"{uri} names no database file.")
    if path.is_dir():
        raise TrackingError(f"{path} is a directory, not an SQLite database ({uri}).")
    with open(path, "rb") as f:
        header = f.read(len(_SQLITE_HEADER))
    if not header:
        raise TrackingError(f"{path} is empty, not an MLflow store ({uri}); nothing was "
                            "written to it.")
    if header != _SQLITE_HEADER:
        raise TrackingError(f"{path} is not an SQLite database ({uri}).")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                               "name = 'experiments'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise TrackingError(f"{path} cannot be read as an SQLite database ({exc}).") from exc
    if found is None:
        raise TrackingError(f"{path} is not an MLflow store (it has no 'experiments' table); "
                            f"nothing was written to it.")


def _check_database_store(uri: str) -> None:
    """A database (PostgreSQL, MySQL, SQL Server) that holds MLflow's tables."""
    import sqlalchemy

    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    connect_args = {"connect_timeout": int(_CONNECT_TIMEOUT)} if scheme != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
    except Exception as exc:  # a bad URL, a driver that is not installed
        raise TrackingError(f"cannot open the MLflow store at {uri}: {_first_line(exc)}") from exc
    try:
        with engine.connect() as connection:
            found = sqlalchemy.inspect(connection).has_table("experiments")
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise TrackingError(f"cannot read the database at {uri}: "
                            f"{_first_line(getattr(exc, 'orig', None) or exc)}") from exc
    finally:
        engine.dispose()
    if not found:
        raise TrackingError(f"the database at {uri} is not an MLflow store (it has no "
                            f"'experiments' table); nothing was written to it.")


def find_experiment(client: Any, name: str) -> Any:
    """The active experiment called ``name``; the error lists the experiments there are."""
    with mlflow_errors(f"cannot read experiment {name!r} from {client.tracking_uri}"):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            return experiment
        names = sorted(e.name for e in client.search_experiments(max_results=50))
    shown = ", ".join(repr(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
    raise TrackingError(f"experiment {name!r} not found at {client.tracking_uri}; experiments "
                        f"there: {shown or 'none'}.")


def get_run(client: Any, run_id: str) -> Any:
    """The run ``run_id``, or a :class:`TrackingError` saying it is not there."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(f"run {run_id!r} not found at {client.tracking_uri}.") from exc
        raise TrackingError(f"cannot read run {run_id!r}: {_first_line(exc)}") from exc


def experiment_runs(client: Any, experiment_id: str) -> list[Any]:
    """Every active run of the experiment, oldest first, except the report runs themselves."""
    runs: list[Any] = []
    token = None
    with mlflow_errors(f"cannot list the runs of experiment {experiment_id}"):
        while True:
            page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                      order_by=["attributes.start_time ASC"])
            runs.extend(page)
            token = page.token
            if not token:
                break
    return [r for r in runs if r.data.tags.get(REPORT_TAG) != "true"]


def _wanted(names: list[str], monitor: str, train_metric: str | None) -> dict[str, str]:
    """The metric histories to fetch, as {MLflow key: name for the advisor}."""
    wanted = {monitor: monitor}
    if train_metric:
        wanted[train_metric] = train_metric
    rates = [n for n in names if n in _LR_NAMES or n.startswith(("lr-", "lr/", "lr_"))]
    if rates:
        wanted[rates[0]] = rates[0]
    elif _CALLBACK_LR in names:
        wanted[_CALLBACK_LR] = "lr"
    if "planned_lr" in names:  # the learning-rate plan, see advisor.replay
        wanted["planned_lr"] = "planned_lr"
    elif _CALLBACK_PLAN in names:
        wanted[_CALLBACK_PLAN] = "planned_lr"
    if "epoch" in names:
        wanted["epoch"] = "epoch"
    return wanted


def run_curves(client: Any, run: Any, monitor: str,
               train_metric: str | None = None) -> tuple[pd.DataFrame, str]:
    """The run's curves as a long frame (``run_id``, ``epoch`` or ``step``, ``metric``,
    ``value``) and the unit of its x-axis (see the module's docstring).

    Only the metrics the advisor reads are fetched: the monitored and training metrics, a
    learning rate and ``epoch``; the callback's own ``advisor/*`` metrics are not inputs.

    Raises:
        MissingMetricError: the run has no ``monitor`` (or ``train_metric``); the message names the
            metrics it has.
    """
    run_id = run.info.run_id
    names = sorted(run.data.metrics)
    present = [n for n in names if not n.startswith("advisor/")]
    for needed in (monitor, train_metric):
        if needed and needed not in names:
            raise MissingMetricError(f"run {run_id} has no metric {needed!r}; its metrics: "
                                f"{', '.join(present) or 'none'}.")
    rows: list[tuple[float, str, float]] = []
    with mlflow_errors(f"cannot read the metrics of run {run_id}"):
        for key, name in _wanted(names, monitor, train_metric).items():
            rows.extend((m.step, name, _stored_value(m.value))
                        for m in client.get_metric_history(run_id, key))
    curves = pd.DataFrame(rows, columns=["step", "metric", "value"])
    own_plan = _CALLBACK_PLAN in names and "planned_lr" not in names
    plan = curves[curves["metric"] == "planned_lr"] if own_plan else curves.iloc[:0]
    curves, unit = epoch_axis(curves.drop(plan.index), monitor)
    if unit == "step" and run.data.tags.get("advisor.unit") == "epoch":
        unit = "epoch"  # written by the callback at step = epoch: its steps are epochs
        curves = curves.rename(columns={"step": "epoch"})  # one x column, the plan's too
    if not plan.empty and unit == run.data.tags.get("advisor.unit", unit):
        # the callback logs its plan at its own checks' steps (the epoch, or the global step)
        x_column = "epoch" if "epoch" in curves.columns else "step"
        curves = pd.concat([curves, plan.rename(columns={"step": x_column})],
                           ignore_index=True)
    curves.insert(0, "run_id", run_id)
    return curves, unit


def _stored_value(value: float) -> float:
    """A metric value as it was logged: MLflow's SQL stores cannot hold infinities and keep
    them as the largest float, which is read back here as the infinity it was."""
    return math.copysign(math.inf, value) if abs(value) == _STORED_INF else value


def epoch_axis(curves: pd.DataFrame, monitor: str) -> tuple[pd.DataFrame, str]:
    """Put long curves (``step``, ``metric``, ``value``) on an epoch axis when an ``epoch``
    metric allows it (one check of ``monitor`` per epoch), else keep MLflow's steps.

    Returns the frame with an ``epoch`` or a ``step`` column, and ``"epoch"`` or ``"step"``.
    """
    is_epoch = curves["metric"] == "epoch"
    epochs, rest = curves[is_epoch], curves[~is_epoch]
    if epochs.empty:
        return rest.reset_index(drop=True), "step"
    epoch_at = epochs.groupby("step", sort=True)["value"].last()
    checks = rest.loc[rest["metric"] == monitor, "step"].unique()
    if not pd.Index(checks).isin(epoch_at.index).all() or epoch_at.loc[checks].duplicated().any():
        return rest.reset_index(drop=True), "step"
    offset = 1.0 if epochs["value"].min() == 0 else 0.0
    table = epoch_at.rename("epoch").reset_index()
    table["step"] = table["step"].astype(float)
    rest = rest.assign(step=rest["step"].astype(float)).sort_values("step", kind="stable")
    # a value logged between two epoch entries belongs to the epoch logged last before it
    merged = pd.merge_asof(rest, table, on="step", direction="backward")
    merged["epoch"] = merged["epoch"].fillna(epoch_at.iloc[0]) + offset
    out = merged[["epoch", "metric", "value"]].reset_index(drop=True)
    out.attrs["epochs_from_zero"] = bool(offset)  # the run's own numbering (Lightning's)
    return out, "epoch"


def write_advice_tags(client: Any, analysis: Any) -> None:
    """The callback's tags (``advisor.verdict``, ``advisor.reason``, ``advisor.best_<unit>``,
    ``advisor.suggested_stop_<unit>``, ...) on an analysed run; the run description too,
    unless the run has one that is not the advisor's. Both tell the analysis's story: the
    same headline, checkpoint and saving or cost as the report."""
    from mlflow.entities import RunTag

    from .dashboards import advice_markdown, story

    a = analysis
    advice, unit = a.advice, a.unit
    tags = story.summary_tags(advice, unit, pruned=a.pruned, checkpoint=a.checkpoint)
    with mlflow_errors(f"cannot write the tags of run {a.run_id}"):
        run_tags = client.get_run(a.run_id).data.tags
        if f"advisor.suggested_stop_{unit}" not in tags and \
                run_tags.get(f"advisor.suggested_stop_{unit}"):
            tags[f"advisor.suggested_stop_{unit}"] = "none"
        note = run_tags.get("mlflow.note.content", "")
        if not note or note.startswith("**training-advisor:"):
            tags["mlflow.note.content"] = advice_markdown(
                advice, unit, a.budget, a.checkpoint, pruned=a.pruned, origin=a.origin,
                missing=a.checkpoint_missing, analysis=a)
        client.log_batch(a.run_id, tags=[RunTag(k, str(v)[:_MAX_TAG_CHARS])
                                         for k, v in tags.items()], synchronous=True)


def log_report_run(client: Any, experiment_id: str, directory: Path, summary: str) -> str:
    """A new run in the experiment holding the report folder as artifacts; returns its id.

    It is tagged ``advisor.report=true``, so later reports do not analyse it.
    """
    with mlflow_errors("cannot log the report"):
        run = client.create_run(experiment_id, run_name="advisor-report",
                                tags={REPORT_TAG: "true", "mlflow.note.content": summary})
        run_id = run.info.run_id
        try:
            client.log_artifacts(run_id, str(directory))
        except BaseException:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
    return run_id
