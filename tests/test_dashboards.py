"""The pictures and pages, without MLflow: analysis of a run, PNG plot, run report, experiment
dashboard, and escaping of everything a user controls."""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from advisor.dashboards import (
    RunAnalysis,
    analyze_run,
    experiment_html,
    run_plot_png,
    run_report_html,
)
from advisor.dashboards.experiment import run_report_path
from advisor.dashboards.html import timeline_segments
from advisor.tracking import epoch_axis

SCRIPT = "<script>alert(1)</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _saturating(n: int = 60, seed: int = 0) -> pd.DataFrame:
    e = np.arange(1, n + 1)
    val = 0.3 + np.exp(-e / 4) + np.random.default_rng(seed).normal(0, 0.001, n)
    return pd.DataFrame({"epoch": e, "val_loss": val, "train_loss": val - 0.05})


def _overfitting(n: int = 40) -> pd.DataFrame:
    e = np.arange(1, n + 1)
    val = np.where(e <= 15, 1 - 0.03 * e, 0.55 + 0.02 * (e - 15))
    val = val + np.random.default_rng(0).normal(0, 0.003, n)
    return pd.DataFrame({"epoch": e, "val_loss": val, "train_loss": 1 - 0.024 * e})


def _improving(n: int = 30) -> pd.DataFrame:
    e = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": e, "val_loss": 1 / np.sqrt(e), "train_loss": 0.9 / np.sqrt(e)})


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def analyses() -> dict[str, RunAnalysis]:
    kw = {"monitor": "val_loss", "train_metric": "train_loss", "experiment": "exp"}
    return {
        "saturating": analyze_run(_saturating(), run_id="sat", run_name=SCRIPT, **kw),
        "overfitting": analyze_run(_overfitting(), run_id="over", run_name="overfit", **kw),
        "improving": analyze_run(_improving(), run_id="imp", run_name="improving", **kw),
    }


# ---------------------------------------------------------------------------- the analysis
def test_saturating_run_stops_in_a_plateau_window_and_saves_epochs(analyses):
    a = analyses["saturating"]
    assert a.verdict == "plateau" and a.unit == "epoch"
    assert a.stopped_early and a.stop_step < 60 and a.saved_steps == 60 - a.stop_step
    lo, hi = a.plateau_window
    assert lo < hi == a.stop_step  # the window ends at the check that stopped
    assert a.overfitting_onset is None
    # the replay ends at the stop; the curves are kept in full
    assert len(a.history) == a.stop_step and a.history[-1]["should_stop"]
    assert len(a.steps) == 60 and a.last_step == 60
    assert a.advice.forecast is not None and a.advice.forecast.step == 60


def test_overfitting_onset_is_the_best_epoch(analyses):
    a = analyses["overfitting"]
    assert a.verdict == "overfitting"
    assert a.overfitting_onset == a.advice.best_step == 15
    assert 15 < a.stop_step < 40 and a.plateau_window is None


def test_one_checkpoint_is_named_for_one_decision():
    """The smoothed best (epoch 21) and the best check (epoch 22, a dip) differ: the checkpoint
    to keep, the suggested stop and (for overfitting) the band all name the best check."""
    from advisor.dashboards import advice_markdown
    from advisor.report import format_advice

    e = np.arange(1, 61)
    val = np.where(e <= 20, 1.0 - 0.02 * e, 0.6 + 0.006 * (e - 20))
    val = val + np.random.default_rng(0).normal(0, 0.002, e.size)
    val[21] = 0.595  # epoch 22
    a = analyze_run(pd.DataFrame({"epoch": e, "val_loss": val, "train_loss": 1 / np.sqrt(e)}),
                    train_metric="train_loss")
    advice = a.advice
    # validation rises after epoch 20; main's policy may call the stop overfitting or plateau
    assert advice.should_stop and advice.best_step == 22
    assert advice.suggested_stop_step == 22 and "epoch 22" in advice.reason
    if a.verdict == "overfitting":  # its band starts at the kept best
        assert a.overfitting_onset == 22 and "after epoch 22, the best check" in run_report_html(a)
    assert "around the best check at epoch 22" in advice.evidence_for("overfitting").summary
    text = format_advice(a)
    assert "keep:     epoch 22, val_loss 0.595" in text
    assert "paid off: until epoch 22, the best check" in text
    note = advice_markdown(advice, a.unit, a.budget)
    assert "| best val\\_loss (keep this checkpoint) | 0.595 at epoch 22 |" in note
    assert "| training paid off | until epoch 22, the best check |" in note
    page = run_report_html(a)
    assert "Keep: epoch 22, val_loss 0.595" in page
    for other in ("epoch 21 ", "epoch 21)"):  # the smoothed best only in the evidence
        assert other not in note and other not in text.split("evidence:")[0]


def test_a_best_step_past_a_million_is_named_in_full_everywhere():
    """A run validated every 1,000 steps past step 1,000,000: the checkpoint to keep is named
    by its exact step in the reason, the tags, the note and the report (``f"{step:g}"`` read
    1.04e+06, which names no checkpoint at all)."""
    from advisor.dashboards import advice_markdown
    from advisor.dashboards.story import summary_tags
    from advisor.report import format_advice

    steps = 1_000_000 + 1_000 * np.arange(1, 81)
    i = np.arange(80)
    val = 0.3 + np.exp(-i / 4) + np.random.default_rng(0).normal(0, 0.001, i.size)
    a = analyze_run(pd.DataFrame({"step": steps, "val_loss": val, "train_loss": val - 0.05}),
                    train_metric="train_loss", step_column="step")
    advice = a.advice
    assert advice.should_stop and a.unit == "step"
    best = int(advice.best_step)
    assert best == steps[int(np.argmin(val[: int(np.searchsorted(steps, advice.step)) + 1]))]
    assert f"step {best}" in advice.reason and "e+06" not in advice.reason
    tags = summary_tags(advice, a.unit, a.budget)
    assert tags["advisor.best_step"] == str(best)
    assert tags["advisor.suggested_stop_step"] == str(int(advice.suggested_stop_step))
    assert f"keep:     step {best}," in format_advice(a)
    assert f"at step {best} |" in advice_markdown(advice, a.unit, a.budget)
    assert f"Keep: step {best}," in run_report_html(a)


def test_plateau_paid_off_before_the_best_check_says_both():
    e = np.arange(1, 61)
    a = analyze_run(pd.DataFrame({"epoch": e, "val_loss": 0.3 + np.exp(-e / 4)}))
    advice = a.advice
    assert a.verdict == "plateau"
    assert advice.suggested_stop_step < advice.best_step == advice.step  # still creeping down
    from advisor.report import format_advice

    line = next(x for x in format_advice(a).splitlines() if x.startswith("paid off:"))
    assert line.startswith(f"paid off: until epoch {advice.suggested_stop_step:g}: the epochs "
                           f"after it gained less than the tolerance")
    assert line.endswith(f"the best check (epoch {advice.best_step:g}) included")


def _second_drop(n: int = 60) -> pd.DataFrame:
    """Flat from about epoch 15 to 45, then a second fall (a schedule the history does not
    show): the advisor stops on the plateau, and the run got much better after it."""
    e = np.arange(1, n + 1)
    val = np.where(e <= 45, 0.6 + 0.4 * np.exp(-e / 3), 0.33 + 0.27 * np.exp(-(e - 45) / 3))
    return pd.DataFrame({"epoch": e, "val_loss": val + np.random.default_rng(0).normal(
        0, 0.002, n)})


def test_a_costly_stop_is_reported_with_its_cost_not_only_its_saving(analyses):
    from advisor.dashboards import advice_markdown
    from advisor.report import format_advice

    a = analyze_run(_second_drop(), run_id="drop", run_name="second-drop")
    assert a.advice.should_stop and a.stopped_early and a.stop_step < 45  # on the flat stretch
    values = _second_drop()["val_loss"].to_numpy()
    kept, final = values[: int(a.stop_step)].min(), values.min()
    assert a.kept_value == pytest.approx(kept) and a.final_best == pytest.approx(final)
    assert a.regret == pytest.approx(kept - final)
    assert a.regret_share == pytest.approx((kept - final) / final) and a.regret_share > 0.4
    share = f"{a.regret_share:.1%}"
    cost = next(x for x in format_advice(a).splitlines() if x.startswith("cost:"))
    assert f"({share}) worse than the" in cost and "saved" not in cost.split(":")[0]
    for text in (run_report_html(a), advice_markdown(a.advice, a.unit, a.budget, analysis=a)):
        assert f"({share}) worse than the" in text and "cost of the advisor" in text
    # a stop that cost nothing says so
    over = analyses["overfitting"]  # only worse after the stop
    assert over.stopped_early and over.regret == 0
    assert "at no cost" in format_advice(over)
    # the dashboard sums the saving and names the worst cost; its table sorts on the cost
    page = experiment_html("exp", [*analyses.values(), a])
    summary = page[page.index('<p class="summary">'):]
    summary = summary[:summary.index("</p>")]
    assert "could have been saved" in summary
    assert "got better after the stop" in summary and f"up to {share} worse" in summary
    assert "second-drop" in summary
    table = page[page.index('<table class="sortable"'):page.index("</table>")]
    assert 'cost of the stop (% of the best)</th>' in table.replace(' data-type="number"', "")
    assert f'data-value="{float(a.regret_share)!r}">{share}</td>' in table
    assert f'data-value="{float(a.regret)!r}"' in table


def test_improving_run_is_not_stopped(analyses):
    a = analyses["improving"]
    assert a.verdict == "improving" and not a.stopped_early and a.saved_steps == 0
    assert a.stop_step == a.last_step == 30


def test_a_run_that_used_its_whole_budget_says_so_everywhere(analyses):
    from advisor.dashboards import advice_markdown
    from advisor.report import format_advice

    a = analyses["improving"]  # 30 epochs of a budget of 30, never stopped
    shown = {"description": advice_markdown(a.advice, a.unit, a.budget).splitlines()[0],
             "report": run_report_html(a), "terminal": format_advice(a).splitlines()[1]}
    for where, text in shown.items():
        assert "completed its budget of 30 epochs" in text, where
        assert "keep training" not in text, where
    # while it runs, it is still to keep training
    running = dataclasses.replace(a, running=True)
    assert "keep training, epoch 30 of 30" in format_advice(running)


def test_budget_sets_the_forecast_horizon():
    a = analyze_run(_improving(), train_metric="train_loss", budget=100)
    assert a.budget == 100 and a.advice.forecast.step == 100


def test_missing_monitor_names_the_metrics_present():
    with pytest.raises(ValueError, match="metrics present: .*train_loss"):
        analyze_run(_improving().drop(columns="val_loss"))


def test_summary_row_is_json_safe(analyses):
    import json

    row = analyses["saturating"].summary()
    assert json.loads(json.dumps(row))["verdict"] == "plateau"
    assert row["saved"] == analyses["saturating"].saved_steps


def test_timeline_segments_merge_consecutive_verdicts():
    rows = [{"step": s, "verdict": v, "reason": f"r{s}"}
            for s, v in enumerate(["undecided", "undecided", "improving", "plateau"], 1)]
    assert timeline_segments(rows) == [
        {"verdict": "undecided", "first": 1, "last": 2, "reason": "r2", "checks": 2},
        {"verdict": "improving", "first": 3, "last": 3, "reason": "r3", "checks": 1},
        {"verdict": "plateau", "first": 4, "last": 4, "reason": "r4", "checks": 1}]


# ---------------------------------------------------------------------------- x-axis from MLflow
def test_epoch_axis_uses_lightnings_epoch_metric_counted_from_one():
    # as MLFlowLogger logs: val_loss and epoch (0-based) at the global step, lr in between
    rows = []
    for epoch in range(5):
        step = 10 * (epoch + 1) - 1
        rows += [(step, "val_loss", 1.0 / (epoch + 1)), (step, "epoch", float(epoch)),
                 (step - 5, "lr-SGD", 0.1), (step - 5, "epoch", float(epoch))]
    frame, unit = epoch_axis(pd.DataFrame(rows, columns=["step", "metric", "value"]), "val_loss")
    assert unit == "epoch"
    val = frame[frame.metric == "val_loss"]
    assert val["epoch"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame[frame.metric == "lr-SGD"]["epoch"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert "epoch" not in set(frame["metric"])


def test_epoch_axis_keeps_steps_with_several_checks_per_epoch_or_no_epoch_metric():
    rows = [(s, "val_loss", 1.0 / s) for s in (5, 10, 15, 20)]
    rows += [(s, "epoch", float((s - 1) // 10)) for s in (5, 10, 15, 20)]
    frame, unit = epoch_axis(pd.DataFrame(rows, columns=["step", "metric", "value"]), "val_loss")
    assert unit == "step" and frame["step"].tolist() == [5, 10, 15, 20]
    plain = pd.DataFrame([(1, "val_loss", 1.0)], columns=["step", "metric", "value"])
    assert epoch_axis(plain, "val_loss")[1] == "step"


def test_epoch_axis_keeps_an_epoch_metric_that_starts_at_one():
    rows = [(10 * e, "val_loss", 1.0 / e) for e in (1, 2, 3)]
    rows += [(10 * e, "epoch", float(e)) for e in (1, 2, 3)]
    frame, unit = epoch_axis(pd.DataFrame(rows, columns=["step", "metric", "value"]), "val_loss")
    assert unit == "epoch" and frame["epoch"].tolist() == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------- plot
def test_plot_is_a_png_of_the_requested_size(analyses):
    data = run_plot_png(analyses["saturating"], width=8, height=5, dpi=50)
    assert _png_size(data) == (400, 250)


def test_plot_draws_names_with_dollars_and_underscores_literally():
    frame = _improving().rename(columns={"val_loss": "_val $loss$", "train_loss": "$x^"})
    a = analyze_run(frame, monitor="_val $loss$", train_metric="$x^", run_name="$\\frac{")
    assert _png_size(run_plot_png(a, dpi=40))[0] == 400


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("case", ["spike", "first", "inf", "alternating", "all-huge", "tiny"])
def test_plot_and_page_of_extreme_values_name_what_is_left_out(case, mode):
    """Values near the float range break matplotlib's limits and ticks: they are left out of
    the plot, and the page says which (a 1e308 spike failed the whole report)."""
    e = np.arange(1, 41)
    val = 0.3 + np.exp(-e / 4)
    val = {"spike": np.where(e == 21, 1e308, val), "first": np.where(e == 1, -1e308, val),
           "inf": np.where(e > 30, np.inf, val), "all-huge": 1e300 * val,
           "alternating": np.where(e % 2 == 0, 1e308, -1e308),
           "tiny": np.where(e % 3 == 0, 5e-324, 1e99 * val)}[case]
    a = analyze_run(pd.DataFrame({"epoch": e, "val_loss": val, "train_loss": val[::-1]}),
                    "val_loss", mode, "train_loss", budget=60)
    assert _png_size(run_plot_png(a, dpi=30))[0] == 300
    page = run_report_html(a, run_plot_png(a, dpi=30))
    if case == "tiny":  # within the drawable range: nothing to say
        assert 'class="values"' not in page
        return
    assert 'class="values"' in page
    assert ("is infinite at 10 of 40 checks (steps 31-40)" if case == "inf"
            else "too large to draw") in page


# ---------------------------------------------------------------------------- HTML
def test_run_report_is_self_contained_and_shows_the_advice(analyses):
    a = analyses["saturating"]
    page = run_report_html(a, run_plot_png(a, dpi=40))
    assert page.startswith("<!DOCTYPE html>")
    assert 'class="badge verdict-plateau"' in page
    assert "data:image/png;base64," in page
    assert re.search(r"""(src|href)=["'](https?:)?//""", page) is None  # nothing fetched
    assert "<script" not in page.replace("&lt;script", "")  # the run report has no script
    for text in ("plateau window", "Verdict timeline", "Evidence", "forecast at epoch 60",
                 "could have been saved", "Mann-Kendall"):
        assert text in page, text


def test_user_text_is_escaped_everywhere():
    """A run named <script>alert(1)</script>, hostile metric names: rendered as text."""
    hostile_metric = '<img src=x onerror="alert(2)">'
    frame = _saturating().rename(columns={"val_loss": hostile_metric})
    a = analyze_run(frame, monitor=hostile_metric, run_id="<b>id</b>", run_name=SCRIPT,
                    experiment="<i>exp</i>")
    assert hostile_metric in a.advice.reason  # the reason names the metric
    pages = [run_report_html(a, b"\x89PNG fake"), experiment_html("<i>exp</i>", [a])]
    for page in pages:
        assert SCRIPT not in page and "<img src=x" not in page and "<i>exp</i>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    # the experiment dashboard's only script is its own table sorter
    assert pages[1].count("<script>") == 1


def test_experiment_dashboard_table_grid_and_links(analyses):
    skipped = RunAnalysis(run_id="nv", run_name="no-val", monitor="val_loss", mode="min",
                          train_metric=None, unit="step", skipped="run nv has no metric "
                          "'val_loss'; its metrics: loss.")
    runs = [*analyses.values(), skipped]
    page = experiment_html("exp", runs)
    table = page[page.index('<table class="sortable"'):page.index("</table>")]
    assert table.count("<tr>") == 1 + 3  # header + analysed runs
    assert 'data-type="number"' in table and "stop epoch" in table
    assert "epochs that could have been saved" in table
    sat = analyses["saturating"]
    assert f'data-value="{float(sat.saved_steps)!r}"' in table
    assert page.count('<svg class="spark"') == 3
    assert f'href="{run_report_path("sat")}"' in page
    assert "Skipped" in page and "its metrics: loss." in page
    total = sum(a.saved_steps for a in analyses.values())
    assert f"{total:.4g} epochs could have been saved" in page


def test_dashboard_and_run_pages_link_back_to_each_other_and_to_mlflow(analyses):
    a = dataclasses.replace(analyses["saturating"], links=(
        ("all runs of exp", "../index.html"),
        ("this run in MLflow", "http://127.0.0.1:5000/#/experiments/3/runs/sat")))
    page = run_report_html(a)
    assert '<a href="../index.html">all runs of exp</a>' in page
    assert '<a href="http://127.0.0.1:5000/#/experiments/3/runs/sat">this run in MLflow</a>' in page
    dashboard = experiment_html("exp", list(analyses.values()), "http://127.0.0.1:5000/",
                                experiment_id="3")
    assert 'href="http://127.0.0.1:5000/#/experiments/3"' in dashboard
    assert 'href="http://127.0.0.1:5000/#/experiments/3/runs/sat"' in dashboard
    # a local store has no UI to link to
    assert "#/experiments" not in experiment_html("exp", list(analyses.values()),
                                                  "sqlite:///mlflow.db", experiment_id="3")


def test_experiment_dashboard_labels_cells_when_units_differ(analyses):
    steps = analyze_run(_improving().rename(columns={"epoch": "step"}), run_id="s")
    page = experiment_html("exp", [analyses["saturating"], steps])
    assert "could have been saved" in page and "stop epoch" not in page
    assert ">epoch " in page and ">step " in page


def test_import_dashboards_does_not_import_matplotlib_or_mlflow():
    code = ("import sys, advisor.dashboards, advisor.report, advisor.tracking; "
            "print(sorted(m for m in ('matplotlib', 'mlflow', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
