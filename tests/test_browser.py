"""The advice as a person sees it: the MLflow UI of the session's real server, in Chromium.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import re
import shutil
import uuid

import pytest
import pytorch_lightning as pl
import torch
from lightning_models import LinearRegression
from mlflow import MlflowClient
from playwright.sync_api import expect, sync_playwright
from torch.utils.data import DataLoader, TensorDataset

from advisor import AdvisorCallback

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PAGE_TIMEOUT_MS = 60_000  # the first load of the UI bundle is slow on a small CI machine


def _train(tracking_uri: str, experiment_name: str) -> AdvisorCallback:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    data = DataLoader(TensorDataset(x, y), batch_size=64)
    callback = AdvisorCallback(monitor="val_loss", train_metric="train_loss", action="stop",
                               tracking_uri=tracking_uri, experiment_name=experiment_name)
    trainer = pl.Trainer(max_epochs=30, logger=False, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(LinearRegression(lr=0.0), data, data)  # flat: a plateau stop
    return callback


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.filterwarnings("ignore:.*does not have many workers.*",
                            "ignore:.*LeafSpec.*:DeprecationWarning")
def test_run_page_shows_verdict_and_reason(mlflow_server, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "the browser test needs Debian's chromium: apt-get install -y chromium"
    name = f"browser-{uuid.uuid4().hex[:8]}"
    callback = _train(mlflow_server.url, name)
    verdict, reason = callback.advice.verdict.value, callback.advice.reason
    assert callback.stop_reason is not None and verdict == "plateau"
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(name)
    (run,) = client.search_runs([experiment.experiment_id])
    url = f"{mlflow_server.url}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"

    screenshot = tmp_path / "run-page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            description = page.locator('[data-testid="note-editor-preview-content"]')
            verdict_tag = page.locator('div[role="status"][title="advisor.verdict"]')
            try:
                # the description: the verdict in capitals on its first line, then the reason
                # as plain text (markdown escapes in it must not show, nor turn into italics)
                expect(description).to_contain_text(f"training-advisor: {verdict.upper()}",
                                                    timeout=PAGE_TIMEOUT_MS)
                first_line = description.inner_text().strip().splitlines()[0]
                assert verdict.upper() in first_line and "stop" in first_line
                paragraph = description.locator("p").filter(has_text=reason[:30]).first
                assert _squash(paragraph.inner_text()) == _squash(reason)
                assert paragraph.locator("em, strong, code, a").count() == 0
                # the tag chip: key and value
                expect(verdict_tag).to_be_visible(timeout=PAGE_TIMEOUT_MS)
                chip = _squash(verdict_tag.inner_text()).replace(" :", ":")
                assert chip == f"advisor.verdict: {verdict}"
                expect(page.locator('div[role="status"][title="advisor.reason"]')
                       ).to_be_visible()
            finally:
                page.screenshot(path=str(screenshot), full_page=True)
                print(f"screenshot: {screenshot}")
        finally:
            browser.close()
