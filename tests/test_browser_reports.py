"""The reports as a person sees them, in Debian's headless Chromium (Playwright never downloads a
browser): a run's HTML report, the experiment dashboard, and the report in the MLflow UI's
artifact view. Screenshots are kept in ``tests/output/`` (not committed).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from advisor.cli import main

PAGE_TIMEOUT_MS = 60_000  # the first load of the MLflow UI bundle is slow on a small machine
OUTPUT = Path(__file__).resolve().parent / "output"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report_dir(report_experiment, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-report") / "dash"
    assert main(["report", "--experiment", report_experiment.name, "--tracking-uri",
                 report_experiment.url, "--out", str(out), "--train-metric", "train_loss",
                 "--quiet"]) == 0
    return out


class Watched:
    """A page with its console errors, uncaught exceptions and dialogs (alert() calls)."""

    def __init__(self, browser, width: int = 1400, height: int = 1000) -> None:
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def shot(self, name: str) -> Path:
        path = OUTPUT / name
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


def test_run_report_shows_verdict_plot_and_escaped_name(browser, report_dir, report_experiment):
    run_id = report_experiment.runs["saturating"]  # the run named <script>alert(1)</script>
    w = Watched(browser)
    try:
        w.page.goto((report_dir / "runs" / f"{run_id}.html").as_uri())
        expect(w.page.locator("h1")).to_have_text(SCRIPT)  # shown as text, not run
        expect(w.page.locator(".verdict .badge")).to_have_text("plateau")
        expect(w.page.locator(".verdict .reason")).to_contain_text("Plateau: training on to")
        plot = w.page.locator("img.plot")
        expect(plot).to_be_visible()
        assert plot.evaluate("img => img.complete && img.naturalWidth") == 1000
        expect(w.page.locator("table.timeline tr").last).to_contain_text("plateau")
        expect(w.page.locator("table.facts")).to_contain_text("plateau window")
    finally:
        w.shot("run-report.png")
    assert w.errors == [] and w.dialogs == []


def test_experiment_dashboard_sorts_and_shows_every_run(browser, report_dir, report_experiment):
    w = Watched(browser)
    try:
        w.page.goto((report_dir / "index.html").as_uri())
        rows = w.page.locator("#runs tbody tr")
        expect(rows).to_have_count(4)
        expect(w.page.locator("svg.spark")).to_have_count(4)
        expect(w.page.locator("#runs")).to_contain_text(SCRIPT)
        expect(w.page.locator("ul.skipped")).to_contain_text("no-val")
        for verdict in ("plateau", "overfitting", "improving"):
            expect(w.page.locator(f"#runs .badge.verdict-{verdict}").first).to_be_visible()
        # sort by the compute that could have been saved, largest first (two clicks)
        header = w.page.locator("#runs th", has_text="could have been saved")
        header.click()
        header.click()
        expect(header).to_have_attribute("aria-sort", "descending")
        column = header.evaluate("th => th.cellIndex")
        saved = rows.evaluate_all(f"rs => rs.map(r => parseFloat(r.cells[{column}].dataset.value))")
        assert saved == sorted(saved, reverse=True) and saved[0] > 0
        w.shot("experiment-dashboard.png")
        # the run's name links to its own report (the row also links to the run in MLflow)
        expect(rows.first.locator("a.mlflow")).to_have_attribute(
            "href", re.compile(r"^http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/[0-9a-f]{32}$"))
        name = rows.first.locator("a").first.inner_text()
        rows.first.locator("a").first.click()
        expect(w.page.locator("h1")).to_have_text(name)
    except BaseException:
        w.shot("experiment-dashboard-failed.png")
        raise
    assert w.errors == [] and w.dialogs == []


def test_mlflow_artifact_view_lists_and_shows_the_report(browser, report_experiment):
    run_id = report_experiment.runs["lightning"]
    verdict = report_experiment.callback.advice.verdict.value
    url = (f"{report_experiment.url}/#/experiments/{report_experiment.experiment_id}/runs/"
           f"{run_id}/artifacts")
    w = Watched(browser)
    try:
        w.page.goto(url)
        listed = w.page.get_by_text("advice_report.html", exact=True)
        expect(listed).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        expect(w.page.get_by_text("advice_plot.png", exact=True)).to_be_visible()
        listed.click()
        close = w.page.get_by_role("button", name="Close")  # MLflow's assistant panel, if shown
        if close.count() == 1 and close.is_visible():
            close.click()
        # MLflow shows an HTML artifact in an iframe: the report itself, verdict first
        report = w.page.frame_locator("iframe").first
        expect(report.locator(".verdict .badge")).to_have_text(verdict, timeout=PAGE_TIMEOUT_MS)
        expect(report.locator("img.plot")).to_be_visible()
    finally:
        w.shot("mlflow-artifact-view.png")
