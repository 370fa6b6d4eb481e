"""One story everywhere (issue 13): what a user reads about a run agrees wherever it is shown.

Walked as a user would, in Debian's headless Chromium (Playwright never downloads a browser) on
the session's real MLflow server:

- the quickstart (``examples/quickstart.py``), stopped by the advisor: its run page (description,
  tag chips) and its report in MLflow's artifact view name the same verdict, the same checkpoint
  file (of its best epoch, in both numberings) and the same saving as the terminal;
- a sweep with pruned and early-finished trials (``AdvisorPruner`` and
  ``AdvisorPruningCallback``, one nested MLflow run per trial): each trial's description, tags,
  Optuna attributes and the ``advisor report`` dashboard and pages tell the same verdict, reason
  and checkpoint; names sort naturally;
- the offline example (``examples/offline_analysis.py``) with two runs more, logged the same way,
  that go on past a plateau stop: one falls again by a lot (the stop cost), one stays flat (no
  cost): the dashboard (sorted by that cost), the run's page, ``advisor analyze`` and the
  description ``--write-tags`` writes give the same cost or saving.

Screenshots go to ``tests/output/`` (not committed); ``quickstart-artifact-view.png`` is the
README's picture (``docs/mlflow_run.png``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import pytorch_lightning as pl
import torch
from conftest import _log_by_hand
from lightning_models import LinearRegression, loaders
from mlflow import MlflowClient
from optuna.trial import TrialState
from playwright.sync_api import expect
from pytorch_lightning.callbacks import ModelCheckpoint

from advisor import AdvisorPruner, AdvisorPruningCallback
from advisor.cli import main

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(__file__).resolve().parent / "output"
PAGE_TIMEOUT_MS = 60_000  # the first load of the MLflow UI bundle is slow on a small machine
SWEEP_EPOCHS = 40

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers.*",
                                        "ignore:.*LeafSpec.*")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _example(script: str, cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


# ---------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def quickstart(mlflow_server, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("quickstart")
    out = _example("quickstart.py", folder, "--tracking-uri", mlflow_server.url)
    run_id = re.search(r"/runs/([0-9a-f]{32})", out)[1]
    return {"out": out, "run": MlflowClient(mlflow_server.url).get_run(run_id)}


def _trial(study: optuna.Study, lr: float, ckpt: Path) -> optuna.trial.FrozenTrial:
    """One trial as a user's objective runs it: a nested MLflow run, a ModelCheckpoint on the
    monitored metric, the pruning callback; pruned trials end KILLED."""
    trial = study.ask()
    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as run:
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        pruning = AdvisorPruningCallback(trial, monitor="val_loss", train_metric="train_loss")
        best = ModelCheckpoint(dirpath=ckpt / f"trial-{trial.number}", monitor="val_loss",
                               save_top_k=1)
        torch.manual_seed(trial.number)
        trainer = pl.Trainer(max_epochs=SWEEP_EPOCHS, logger=False, callbacks=[pruning, best],
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        train, val = loaders()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer.fit(LinearRegression(lr=lr), train, val)
        except optuna.TrialPruned:
            mlflow.end_run(status="KILLED")
            study.tell(trial, state=TrialState.PRUNED)
            return study.trials[trial.number]
    study.tell(trial, pruning.best_value)
    return study.trials[trial.number]


@pytest.fixture(scope="module")
def sweep(mlflow_server, tmp_path_factory) -> dict:
    """Trials 0-2 learn and finish early; 3-9 are finished trials like them (no runs); trial 10
    barely learns and is pruned. Names trial-2 and trial-10 test the natural sort."""
    folder = tmp_path_factory.mktemp("sweep")
    name = f"sweep-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server.url)
    try:
        experiment = mlflow.set_experiment(name)
        study = optuna.create_study(pruner=AdvisorPruner(max_steps=SWEEP_EPOCHS,
                                                         n_startup_trials=3))
        with mlflow.start_run(run_name=name):
            for lr in (0.05, 0.04, 0.06):
                _trial(study, lr, folder / "ckpt")
            first = study.trials[0]
            for k in range(3, 10):
                values = {s: v * (1 + 0.02 * k) for s, v in first.intermediate_values.items()}
                study.add_trial(optuna.trial.create_trial(
                    state=TrialState.COMPLETE, value=min(values.values()),
                    intermediate_values=values))
            _trial(study, 1e-4, folder / "ckpt")
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
    trials = [t for t in study.trials if "mlflow_run_id" in t.user_attrs]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert all(t.user_attrs.get("advisor.finished_early") for t in trials[:3])
    out = folder / "dash"
    assert main(["report", "--experiment", name, "--tracking-uri", mlflow_server.url, "--out",
                 str(out), "--train-metric", "train_loss", "--quiet"]) == 0
    return {"name": name, "experiment_id": experiment.experiment_id, "trials": trials,
            "dash": out}


@pytest.fixture(scope="module")
def offline(mlflow_server, tmp_path_factory) -> dict:
    """The offline example's runs, and two more logged the same way (plain log_batch, no
    advisor) whose curves go on past a plateau: one falls again by a lot after it (the
    advisor's stop costs), one stays flat (its stop costs nothing)."""
    folder = tmp_path_factory.mktemp("offline")
    name = f"offline-{uuid.uuid4().hex[:8]}"
    _example("offline_analysis.py", folder, "--tracking-uri", mlflow_server.url,
             "--experiment", name)
    client = MlflowClient(mlflow_server.url)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    e = np.arange(1, 61)
    noise = np.random.default_rng(0).normal(0, 0.002, e.size)
    plateau = 0.6 + 0.4 * np.exp(-e / 3)
    second_drop = np.where(e <= 45, plateau, 0.33 + 0.27 * np.exp(-(e - 45) / 3)) + noise
    # flat after epoch 12, never better again: creeping up 1e-4 an epoch, +-5e-5 each epoch
    flat = np.where(e <= 12, plateau + noise, plateau[11] + 1e-4 * (e - 12)
                    + 5e-5 * (-1.0) ** e)
    for run_name, val in (("second-drop", second_drop), ("flat-after-stop", flat)):
        _log_by_hand(client, experiment_id, run_name,
                     {"val_loss": val, "train_loss": val - 0.05}, e)
    out = folder / "dash"
    assert main(["report", "--experiment", name, "--tracking-uri", mlflow_server.url, "--out",
                 str(out), "--train-metric", "train_loss", "--write-tags", "--quiet"]) == 0
    return {"name": name, "experiment_id": experiment_id, "dash": out}


def _run_page(browser, url: str, experiment_id: str, run_id: str, tab: str = ""):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/#/experiments/{experiment_id}/runs/{run_id}{tab}")
    return page


def _description(page) -> str:
    note = page.locator('[data-testid="note-editor-preview-content"]')
    expect(note).to_contain_text("training-advisor:", timeout=PAGE_TIMEOUT_MS)
    return note.inner_text()


def _chip(page, key: str) -> str:
    chip = page.locator(f'div[role="status"][title="{key}"]')
    expect(chip).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    return _squash(chip.inner_text()).replace(" :", ":").removeprefix(f"{key}:").strip()


# ---------------------------------------------------------------------------- the quickstart
def test_quickstart_tells_one_story_in_the_terminal_the_run_and_its_report(
        browser, mlflow_server, quickstart):
    out, run = quickstart["out"], quickstart["run"]
    tags = run.data.tags
    keep = re.search(r"^Keep (epoch (\d+) \(Lightning's epoch=(\d+)\), val_loss ([\d.]+): "
                     r"(.+))$", out, re.MULTILINE)
    assert keep, out
    keep_text, best, lightning_epoch, value, path = (keep[1], int(keep[2]), int(keep[3]),
                                                     keep[4], keep[5])
    stop = re.search(r"^training-advisor stopped training at epoch (\d+) ", out, re.MULTILINE)
    assert stop, out
    stopped = int(stop[1])
    assert Path(path).is_file() and Path(path).name.startswith(f"epoch={lightning_epoch}-")
    verdict = tags["advisor.verdict"]
    headline = f"training-advisor: {verdict.upper()} (stop at epoch {stopped} of 100)"
    saving = f"The advisor's stop at epoch {stopped} saved {100 - stopped} of the 100 epochs"
    assert tags["advisor.best_epoch"] == str(best) and tags["advisor.best_checkpoint"] == path

    page = _run_page(browser, mlflow_server.url, run.info.experiment_id, run.info.run_id)
    try:
        note = _description(page)
        assert note.splitlines()[0].strip() == headline
        assert _squash(tags["advisor.reason"]) in _squash(note)
        assert f"epoch {best}" in tags["advisor.reason"]  # the reason names the same epoch
        assert f"{value} at epoch {best} (Lightning's epoch={lightning_epoch})" in _squash(note)
        assert path in note and saving in _squash(note)
        assert _chip(page, "advisor.verdict") == verdict
        assert _chip(page, "advisor.best_epoch") == str(best)
    finally:
        page.screenshot(path=str(OUTPUT / "quickstart-run.png"), full_page=True)
        page.close()

    page = _run_page(browser, mlflow_server.url, run.info.experiment_id, run.info.run_id,
                     "/artifacts")
    try:
        listed = page.get_by_text("advice_report.html", exact=True)
        expect(listed).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        listed.click()
        close = page.get_by_role("button", name="Close")  # MLflow's assistant panel, if shown
        if close.count() == 1 and close.is_visible():
            close.click()
        report = page.frame_locator("iframe").first
        expect(report.locator(".verdict .badge")).to_have_text(verdict, timeout=PAGE_TIMEOUT_MS)
        expect(report.locator(".verdict .action")).to_have_text(f"stop at epoch {stopped} of 100")
        expect(report.locator(".verdict .keep")).to_have_text(f"Keep: {keep_text}")
        expect(report.locator(".verdict .cost")).to_contain_text(saving)
        expect(report.locator("img.plot")).to_be_visible()
        report.locator("img.plot").scroll_into_view_if_needed()
    finally:
        page.screenshot(path=str(OUTPUT / "quickstart-artifact-view.png"))
        page.close()


# ---------------------------------------------------------------------------- the sweep
def test_sweep_trials_tell_one_story_in_mlflow_optuna_and_the_dashboard(
        browser, mlflow_server, sweep):
    client = MlflowClient(mlflow_server.url)
    rows = {}
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto((sweep["dash"] / "index.html").as_uri())
        table = page.locator("#runs")
        for t in sweep["trials"]:
            row = table.locator("tbody tr", has=page.locator(f'a:text-is("trial-{t.number}")'))
            rows[t.number] = {"verdict": row.locator(".badge").text_content(),
                              "action": row.locator(".action").text_content()}
        # names sort as numbers: trial-2 before trial-10
        header = table.locator("th", has_text="run")
        header.first.click()
        names = table.locator("tbody td.name > a:first-child").all_inner_texts()
        assert names == [f"trial-{t.number}" for t in sweep["trials"]], names
        # the names do not wrap at this width
        cell = table.locator("tbody td.name").first
        assert cell.evaluate("td => getComputedStyle(td).whiteSpace") == "nowrap"
        page.screenshot(path=str(OUTPUT / "sweep-dashboard.png"), full_page=True)
    finally:
        page.close()

    for t in sweep["trials"]:
        attrs = t.user_attrs
        run = client.get_run(attrs["mlflow_run_id"])
        tags, note = run.data.tags, run.data.tags["mlflow.note.content"]
        verdict, reason = attrs["advisor.verdict"], attrs["advisor.reason"]
        assert tags["advisor.verdict"] == verdict and tags["advisor.reason"] == reason
        assert rows[t.number]["verdict"] == verdict
        escaped = reason.replace("_", "\\_")
        assert escaped in note
        if t.state is TrialState.PRUNED:
            action = f"pruned at epoch {t.last_step} of {SWEEP_EPOCHS}"
            assert verdict == "unpromising" and tags["advisor.pruned"] == "true"
            assert run.info.status == "KILLED"
        else:
            action = f"stop at epoch {t.last_step} of {SWEEP_EPOCHS}"
            best = f"{attrs['advisor.best_step']:g}"
            assert tags["advisor.best_epoch"] == best
            assert tags["advisor.best_checkpoint"] == attrs["advisor.best_checkpoint"]
            assert Path(attrs["advisor.best_checkpoint"]).name.startswith(
                f"epoch={int(best) - 1}-")
            assert f"(epoch {best})" in reason or f"at epoch {best}." in reason
        assert note.splitlines()[0] == f"**training-advisor: {verdict.upper()} ({action})**"
        assert rows[t.number]["action"] == action
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"advice_report.html", "advice_plot.png", "advice.json"} <= listed
        # the dashboard's page of the run: its name as the title, the same verdict and reason
        page = browser.new_page()
        try:
            page.goto((sweep["dash"] / "runs" / f"{run.info.run_id}.html").as_uri())
            expect(page.locator("h1")).to_have_text(f"trial-{t.number}")
            expect(page.locator(".verdict .badge")).to_have_text(verdict)
            expect(page.locator(".verdict .action")).to_have_text(action)
            assert _squash(page.locator(".verdict .reason").inner_text()) == _squash(reason)
            if t.state is TrialState.COMPLETE:
                expect(page.locator(".verdict .keep")).to_contain_text(
                    f"Keep: epoch {best} (Lightning's epoch={int(best) - 1})")
            page.get_by_role("link", name=re.compile("all runs of")).click()
            expect(page.locator("#runs")).to_be_visible()
        finally:
            page.close()

    # the pruned trial's run page in MLflow: the description says pruned, not IMPROVING
    pruned = sweep["trials"][-1]
    page = _run_page(browser, mlflow_server.url, sweep["experiment_id"],
                     pruned.user_attrs["mlflow_run_id"])
    try:
        note = _description(page)
        assert note.splitlines()[0].strip() == (
            f"training-advisor: UNPROMISING (pruned at epoch {pruned.last_step} of "
            f"{SWEEP_EPOCHS})")
        assert "IMPROVING" not in note and "keep training" not in note
        assert _squash(pruned.user_attrs["advisor.reason"]) in _squash(note)
        assert _chip(page, "advisor.verdict") == "unpromising"
        assert _chip(page, "advisor.pruned") == "true"
    finally:
        page.screenshot(path=str(OUTPUT / "sweep-pruned-run.png"), full_page=True)
        page.close()


# ---------------------------------------------------------------------------- offline report
def test_a_costly_stop_shows_one_cost_in_dashboard_page_terminal_and_description(
        browser, mlflow_server, offline, capsys):
    """The costliest stop (found by sorting the dashboard on it) has one cost everywhere; a
    stop that cost nothing says so everywhere."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    try:
        page.goto((offline["dash"] / "index.html").as_uri())
        header = page.locator("#runs th", has_text="% of the best")
        header.click()
        header.click()
        expect(header).to_have_attribute("aria-sort", "descending")
        column = header.evaluate("th => th.cellIndex")
        first = page.locator("#runs tbody tr").first
        share = first.locator("td").nth(column).inner_text()
        assert share.endswith("%") and float(share[:-1]) > 10, share  # it got much better
        name = first.locator("td.name > a").first.inner_text()
        summary = page.locator(".summary").inner_text()
        assert f"up to {share} worse than the run's best ({name}" in summary
        first.locator("td.name > a").first.click()
        cost = page.locator(".verdict .cost").inner_text()
        assert f"({share}) worse than the" in cost
        expect(page.locator("table.facts")).to_contain_text(f"{share} worse than the run's best")
        page.screenshot(path=str(OUTPUT / "offline-costly-run.png"), full_page=True)
        run_id = Path(page.url).stem
        page.go_back()
        free = page.locator("#runs tbody tr", has=page.locator('a:text-is("flat-after-stop")'))
        assert free.locator("td").nth(column).inner_text() == "0.0%"
        free.locator("td.name > a").first.click()
        saving = page.locator(".verdict .cost").inner_text()
        assert "could have been saved at no cost" in saving
        free_id = Path(page.url).stem
    finally:
        page.close()

    client = MlflowClient(mlflow_server.url)
    assert client.get_run(run_id).data.tags["mlflow.runName"] == name
    for rid, text, label in ((run_id, cost, "cost:"), (free_id, saving, "saved:")):
        capsys.readouterr()
        assert main(["analyze", rid, "--tracking-uri", mlflow_server.url,
                     "--train-metric", "train_loss"]) == 0
        terminal = capsys.readouterr().out
        line = next(x for x in terminal.splitlines() if x.startswith(label))
        assert _squash(line.removeprefix(label)) == _squash(text)

        page = _run_page(browser, mlflow_server.url, offline["experiment_id"], rid)
        try:
            note = _description(page)  # written by --write-tags
            assert _squash(text) in _squash(note)
            assert _chip(page, "advisor.verdict") in note.splitlines()[0].lower()
        finally:
            if rid == run_id:
                page.screenshot(path=str(OUTPUT / "offline-costly-run-mlflow.png"),
                                full_page=True)
            page.close()
