"""``advisor report`` and ``advisor analyze`` against the session's real MLflow server, and the
callback's report artifacts.

The experiment (``report_experiment`` in conftest.py) holds one real Lightning fit with the
callback and runs logged by hand without it; nothing here is mocked.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from processes import free_port

from advisor.cli import main

VENV_BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def report(exp, out: Path, *extra: str) -> int:
    return main(["report", "--experiment", exp.name, "--tracking-uri", exp.url, "--out",
                 str(out), "--train-metric", "train_loss", "--quiet", *extra])


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders a report would leave if it were not cleaned up."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def dashboard(report_experiment, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("report") / "dash"
    assert report(report_experiment, out) == 0
    return out, pd.read_csv(out / "summary.csv").set_index("run_id")


# ---------------------------------------------------------------------------- advisor report
def test_report_writes_a_dashboard_and_one_page_per_run(report_experiment, dashboard):
    out, summary = dashboard
    runs = report_experiment.runs
    assert set(summary.index) == set(runs.values())
    for label in ("lightning", "saturating", "overfitting", "improving"):
        assert (out / "runs" / f"{runs[label]}.html").is_file(), label
    assert not (out / "runs" / f"{runs['no-val']}.html").exists()
    index = (out / "index.html").read_text()
    assert index.count('<svg class="spark"') == 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index and "<script>alert" not in index
    assert leftovers(out.parent) == []
    # each run's page links back to the dashboard and to the run in MLflow
    page = (out / "runs" / f"{runs['saturating']}.html").read_text()
    assert '<a href="../index.html">all runs of ' in page
    assert (f'href="{report_experiment.url}/#/experiments/{report_experiment.experiment_id}/'
            f'runs/{runs["saturating"]}"') in page


def test_report_verdicts_of_runs_logged_without_the_callback(report_experiment, dashboard):
    _, summary = dashboard
    runs = report_experiment.runs
    sat = summary.loc[runs["saturating"]]
    assert sat["verdict"] == "plateau" and sat["unit"] == "step"
    assert sat["stop"] < 60 and sat["saved"] == 60 - sat["stop"] > 0
    over = summary.loc[runs["overfitting"]]  # logged at global steps with an epoch metric
    assert over["verdict"] == "overfitting" and over["unit"] == "epoch"
    assert over["best"] == 15 and 15 < over["stop"] < 40 and over["last"] == 40
    imp = summary.loc[runs["improving"]]
    assert imp["verdict"] == "improving" and imp["saved"] == 0
    no_val = summary.loc[runs["no-val"]]
    assert no_val["verdict"] == "skipped"
    assert "val_loss" in no_val["reason"] and "accuracy, loss" in no_val["reason"]


def test_report_agrees_with_the_callback_on_its_own_run(report_experiment, dashboard):
    """MLFlowLogger logs global steps; the report reads epochs from 1, as the callback does,
    and the callback's budget and learning rate, so it reaches the callback's verdict."""
    _, summary = dashboard
    callback = report_experiment.callback
    row = summary.loc[report_experiment.runs["lightning"]]
    assert callback.stop_reason is not None  # the fit was stopped by the advisor
    assert row["unit"] == "epoch"
    assert row["verdict"] == callback.advice.verdict.value
    assert row["stop"] == callback.advice.step == row["last"] and row["saved"] == 0
    assert row["best"] == callback.advice.best_step
    page = (Path(dashboard[0]) / "runs" / f"{report_experiment.runs['lightning']}.html")
    assert f"forecast at epoch {callback.budget:g}" in page.read_text()
    # its checkpoint in both numberings, as the callback's description names it
    best = int(callback.advice.best_step)
    assert f"epoch {best} (Lightning&#x27;s epoch={best - 1})" in page.read_text()


def test_report_log_and_write_tags(report_experiment, tmp_path):
    client = MlflowClient(report_experiment.url)
    out = tmp_path / "logged"
    assert report(report_experiment, out, "--log", "--write-tags") == 0
    reports = client.search_runs([report_experiment.experiment_id],
                                 filter_string="tags.`advisor.report` = 'true'")
    assert len(reports) == 1
    listed = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {"index.html", "summary.csv", "runs"} <= listed
    pages = {a.path for a in client.list_artifacts(reports[0].info.run_id, "runs")}
    assert f"runs/{report_experiment.runs['overfitting']}.html" in pages
    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    for label in ("saturating", "overfitting", "improving"):
        run = client.get_run(report_experiment.runs[label])
        row = summary.loc[run.info.run_id]
        assert run.data.tags["advisor.verdict"] == row["verdict"], label
        assert run.data.tags["advisor.reason"] == row["reason"]
        assert run.data.tags["mlflow.note.content"].startswith("**training-advisor:")
    over = client.get_run(report_experiment.runs["overfitting"]).data.tags
    assert over["advisor.best_epoch"] == "15" and over["advisor.suggested_stop_epoch"] == "15"
    assert "advisor.verdict" not in client.get_run(report_experiment.runs["no-val"]).data.tags
    # a second report does not analyse the report run, and replaces the first folder
    assert report(report_experiment, out) == 0
    again = pd.read_csv(out / "summary.csv")
    assert reports[0].info.run_id not in set(again["run_id"]) and len(again) == 5
    assert leftovers(tmp_path) == []


def test_report_refuses_a_folder_that_is_not_a_report(report_experiment, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert report(report_experiment, out) == 1
    assert "is not an advisor report" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and leftovers(tmp_path) == []


def test_report_shows_progress_and_can_be_interrupted(report_experiment, tmp_path, capsys):
    """A progress bar on stderr; Ctrl-C (to the installed command) leaves no files, and an
    earlier report in --out stays whole."""
    out = tmp_path / "dash"
    assert main(["report", "--experiment", report_experiment.name, "--tracking-uri",
                 report_experiment.url, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "analysing runs" in err and "5/5" in err
    before = (out / "index.html").read_bytes()

    command = [str(VENV_BIN / "advisor"), "report", "--experiment", report_experiment.name,
               "--tracking-uri", report_experiment.url, "--out", str(out)]
    # as from a terminal: a child of a background job would inherit SIGINT ignored
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    deadline = time.monotonic() + 60
    while b"1/5" not in seen and time.monotonic() < deadline:  # mid-way, imports done
        chunk = os.read(proc.stderr.fileno(), 256)
        if not chunk:
            break
        seen += chunk
    assert proc.poll() is None, "the report finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen + err).decode()
    assert b"interrupted; nothing written" in err
    assert (out / "index.html").read_bytes() == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- advisor analyze
def test_analyze_prints_verdict_reason_evidence_and_forecast(report_experiment, capsys):
    run_id = report_experiment.runs["overfitting"]
    assert main(["analyze", run_id, "--tracking-uri", report_experiment.url,
                 "--train-metric", "train_loss"]) == 0
    out = capsys.readouterr().out
    assert f"run {run_id} (overfit) in {report_experiment.name}" in out
    assert "verdict:  OVERFITTING (stop at epoch" in out
    assert "reason:   Overfitting: val_loss is" in out
    assert "keep:     epoch 15, val_loss 0.5" in out
    assert "paid off: until epoch 15, the best check" in out
    assert "forecast: val_loss" in out and "at epoch 40" in out
    assert "  overfitting: val_loss is" in out


def test_analyze_json(report_experiment, capsys):
    run_id = report_experiment.runs["saturating"]
    assert main(["analyze", run_id, "--tracking-uri", report_experiment.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == run_id and data["run_name"] == "<script>alert(1)</script>"
    assert data["verdict"] == data["advice"]["verdict"] == "plateau"
    assert data["advice"]["should_stop"] is True and data["saved"] > 0
    assert data["advice"]["forecast"]["step"] == 60
    assert {e["detector"] for e in data["advice"]["evidence"]} >= {"plateau", "overfitting"}


def test_analyze_a_run_the_callback_created_without_a_logger(mlflow_server, capsys):
    """The callback's own run (logged at step = epoch, tagged advisor.unit=epoch); and the
    report on demand: report=False writes none at the end, log_report() writes it after fit."""
    import pytorch_lightning as pl
    import torch
    from lightning_models import LinearRegression
    from torch.utils.data import DataLoader, TensorDataset

    from advisor import AdvisorCallback

    name = f"on-demand-{uuid.uuid4().hex[:8]}"
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=32)
    callback = AdvisorCallback(train_metric="train_loss", tracking_uri=mlflow_server.url,
                               experiment_name=name, run_name="on-demand", report=False)
    trainer = pl.Trainer(max_epochs=8, logger=False, callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*", DeprecationWarning)
        trainer.fit(LinearRegression(lr=0.02), data, data)
    client = MlflowClient(mlflow_server.url)
    run_id = callback.run_id
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert "advice.json" in listed and "advice_report.html" not in listed
    callback.log_report()
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"advice_report.html", "advice_plot.png"} <= listed

    capsys.readouterr()  # MLflow's "View run at" line when the callback ended its run
    assert main(["analyze", run_id, "--tracking-uri", mlflow_server.url, "--json",
                 "--train-metric", "train_loss"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["unit"] == "epoch" and data["last"] == 8
    assert data["verdict"] == callback.advice.verdict.value
    assert data["advice"]["forecast"]["step"] == 8


def test_callback_logs_its_report_and_plot(report_experiment, tmp_path):
    client = MlflowClient(report_experiment.url)
    run_id = report_experiment.runs["lightning"]
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"advice_report.html", "advice_plot.png", "advice.json"} <= listed
    page = Path(client.download_artifacts(run_id, "advice_report.html", str(tmp_path)))
    text = page.read_text()
    verdict = report_experiment.callback.advice.verdict.value
    assert f'class="badge verdict-{verdict}"' in text and "data:image/png;base64," in text
    assert "<h1>lightning-fit</h1>" in text  # the MLFlowLogger's run name
    png = Path(client.download_artifacts(run_id, "advice_plot.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tags = client.get_run(run_id).data.tags
    assert tags["advisor.unit"] == "epoch" and tags["advisor.budget"] == "60"


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("case", ["unknown-experiment", "unknown-run", "unreachable",
                                  "no-store", "analyze-no-monitor", "report-no-monitor",
                                  "report-no-train-metric"])
def test_errors_are_one_line_exit_1_and_leave_no_files(report_experiment, tmp_path, capsys,
                                                       case):
    url, out = report_experiment.url, tmp_path / "out"
    argv, expected = {
        "unknown-experiment": (["report", "--experiment", "nope", "--tracking-uri", url],
                               f"experiment 'nope' not found at {url}; experiments there:"),
        "unknown-run": (["analyze", "0" * 32, "--tracking-uri", url],
                        f"run '{'0' * 32}' not found"),
        "unreachable": (["report", "--experiment", report_experiment.name, "--tracking-uri",
                         f"http://127.0.0.1:{free_port()}"], "is unreachable"),
        "no-store": (["analyze", "abc", "--tracking-uri", f"sqlite:///{tmp_path / 'no.db'}"],
                     "no MLflow store at"),
        "analyze-no-monitor": (["analyze", report_experiment.runs["no-val"],
                                "--tracking-uri", url], "has no metric 'val_loss'; its "
                                                        "metrics: accuracy, loss."),
        "report-no-monitor": (["report", "--experiment", report_experiment.name,
                               "--tracking-uri", url, "--monitor", "val_acc", "--quiet"],
                              "no run of experiment"),
        "report-no-train-metric": (["report", "--experiment", report_experiment.name,
                                    "--tracking-uri", url, "--train-metric", "nosuch",
                                    "--quiet"], "has the train metric 'nosuch'"),
    }[case]
    if argv[0] == "report":
        argv += ["--out", str(out)]
    started = time.monotonic()
    assert main(argv) == 1
    assert time.monotonic() - started < 30  # no four-minute retry loop
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("advisor: error: "), err
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- the example
def test_offline_analysis_example(tmp_path):
    """Trains a few scikit-learn models, logs them to the embedded store without the callback,
    then runs `advisor report` on them."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # set by MLflow
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "offline_analysis.py"),
                           "--epochs", "15"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file()
    summary = pd.read_csv(next(tmp_path.glob("advisor-report-*/summary.csv")))
    assert len(summary) >= 3 and set(summary["verdict"]) <= {
        "improving", "undecided", "plateau", "overfitting", "diverged"}
    assert "dashboard:" in done.stdout


# ---------------------------------------------------------------------------- bad values
def test_report_with_infinite_and_huge_values_reports_every_run(mlflow_server, tmp_path, capsys):
    """One diverged run (MLflow's SQL store keeps inf as +-1.797e308) must not cost the other
    runs their report: every run gets its page, and the bad ones say what is wrong with their
    values."""
    import numpy as np
    from conftest import _log_by_hand

    client = MlflowClient(mlflow_server.url)
    name = f"bad-values-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    e = np.arange(1, 41)
    healthy = 0.3 + np.exp(-e / 4) + np.random.default_rng(0).normal(0, 0.0005, e.size)
    bad = {"inf": np.where(e > 20, np.inf, healthy),
           "neg-inf": np.where(e > 20, -np.inf, healthy),
           "spike": np.where(e == 21, 1e308, healthy),
           "first-huge": np.where(e == 1, 1e308, healthy),
           "alternating": np.where(e % 2 == 0, 1e308, -1e308)}
    runs = {label: _log_by_hand(client, experiment_id, label, {"val_loss": values}, e)
            for label, values in {"healthy": healthy, **bad}.items()}
    out = tmp_path / "dash"
    assert main(["report", "--experiment", name, "--tracking-uri", mlflow_server.url,
                 "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    assert set(summary.index) == set(runs.values())
    assert summary.loc[runs["healthy"], "verdict"] in ("plateau", "undecided")  # judged
    assert summary.loc[runs["inf"], "verdict"] == "diverged"
    assert "inf" in summary.loc[runs["inf"], "reason"]  # the value, not 1.797e+308
    pages = {label: (out / "runs" / f"{run_id}.html").read_text()
             for label, run_id in runs.items()}
    assert "data:image/png;base64," in pages["healthy"]
    assert 'class="values"' not in pages["healthy"]
    for label in bad:
        assert 'class="values"' in pages[label], label  # says what is wrong with the values
    assert "infinite at 20 of 40 checks (steps 21-40)" in pages["inf"]
    assert "infinite at 20 of 40 checks (steps 21-40)" in pages["neg-inf"]
    assert "too large to draw" in pages["spike"] and "step 21" in pages["spike"]
    index = (out / "index.html").read_text()
    coordinates = " ".join(re.findall(r'points="([^"]*)"', index)).replace(",", " ").split()
    assert coordinates and all(math.isfinite(float(c)) for c in coordinates)  # drawable curves
    assert main(["analyze", runs["inf"], "--tracking-uri", mlflow_server.url]) == 0
    assert "DIVERGED" in capsys.readouterr().out


# ---------------------------------------------------------------------------- hung servers
@pytest.mark.parametrize("health", [False, True], ids=["never-answers", "stalls-mid-way"])
@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_server_that_accepts_but_never_answers_is_an_error_in_bounded_time(
        command, health, tmp_path, monkeypatch, capsys):
    """A server that takes the connection and never answers HTTP held `analyze` and `report`
    silently (killed at 300 s). Every request has a bounded time (MLflow's own
    MLFLOW_HTTP_REQUEST_TIMEOUT, 1 s here to keep the test short; the command's default
    retries), and the one-line error names the server."""
    from processes import SilentServer

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with SilentServer(health=health) as server:
        argv = (["analyze", "0" * 32] if command == "analyze"
                else ["report", "--experiment", "x", "--out", str(tmp_path / "out"), "--quiet"])
        started = time.monotonic()
        assert main([*argv, "--tracking-uri", server.url]) == 1
        elapsed = time.monotonic() - started
        assert any(b"/api/" in r for r in server.requests) == health  # it got that far
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("advisor: error: "), err
    assert f"127.0.0.1:{server.port}" in err, err
    assert "did not answer within 1 s" in err, err
    assert elapsed < (3 if not health else 15), elapsed
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the command's own setting


# ---------------------------------------------------------------------------- bad stores
def _store_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("advisor: error: "), err
    return err


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_bad_stores_are_one_line_errors_and_are_left_unchanged(command, tmp_path, capsys,
                                                                monkeypatch):
    """A file that is not a database, a directory, an unknown scheme, a plain folder: one line
    each (they printed 39-179-line tracebacks); an empty file or a database that is not an
    MLflow store is not turned into one (report wrote MLflow's schema into an empty file)."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    argv = (["analyze", "0" * 32] if command == "analyze"
            else ["report", "--experiment", "x", "--quiet"])
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 20)
    empty = tmp_path / "empty.db"
    empty.touch()
    folder = tmp_path / "folder.db"
    folder.mkdir()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("create table notes (body text)")
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (text, empty, other)}
    cases = {f"sqlite:///{text}": "is not an SQLite database",
             f"sqlite:///{empty}": "is empty, not an MLflow store",
             f"sqlite:///{folder}": "is a directory, not an SQLite database",
             f"sqlite:///{other}": "is not an MLflow store (it has no 'experiments' table)",
             "foo://bar": "unknown tracking URI scheme 'foo'",
             str(text): "is a file, not an MLflow file store; for an SQLite database, pass "
                        f"sqlite:///{text}",
             str(folder): "cannot open the MLflow store at"}
    for uri, expected in cases.items():
        err = _store_error(capsys, [*argv, "--tracking-uri", uri])
        assert expected in err, (uri, err)
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in before} == before
    assert not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "folder.db", "notes.db",
                                                          "other.db"]


def test_an_empty_postgresql_database_is_not_made_an_mlflow_store(postgres, capsys):
    import sqlalchemy

    url = postgres.create_database(f"empty_{uuid.uuid4().hex[:8]}")
    err = _store_error(capsys, ["report", "--experiment", "x", "--quiet", "--tracking-uri", url])
    assert "is not an MLflow store (it has no 'experiments' table)" in err, err
    engine = sqlalchemy.create_engine(url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
