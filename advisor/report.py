"""``advisor analyze`` and ``advisor report``: MLflow runs in, advice and dashboards out.

A report is built in a hidden folder next to ``out`` and renamed into place at the end, so an
error or an interrupt leaves nothing behind (and a previous report stays whole until the new
one is complete). The tags of ``--write-tags`` are written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .advice import Verdict
from .dashboards import (
    RunAnalysis,
    advice_history_row,
    analyze_run,
    experiment_html,
    run_plot_png,
    run_report_html,
    story,
)
from .dashboards.experiment import mlflow_run_url, run_report_path, summary_text
from .dashboards.html import GENERATOR
from .history import step_text
from .tracking import MissingMetricError, TrackingError, run_curves

__all__ = ["ExperimentReport", "analyze_mlflow_run", "build_report", "default_out",
           "format_advice", "staged_folder"]


def analyze_mlflow_run(client: Any, run: Any, monitor: str = "val_loss", mode: str = "min",
                       train_metric: str | None = None, experiment: str | None = None,
                       **advisor_kwargs: Any) -> RunAnalysis:
    """Replay the advisor over one MLflow run; a run without ``monitor`` comes back skipped.

    The budget is the callback's (its ``advisor.budget`` tag) when the run had the callback,
    else the run's last step.
    """
    info, tags = run.info, run.data.tags
    name = info.run_name or tags.get("mlflow.runName") or info.run_id
    try:
        curves, unit = run_curves(client, run, monitor, train_metric)
    except MissingMetricError as exc:
        return RunAnalysis(run_id=info.run_id, run_name=name, monitor=monitor, mode=mode,
                           train_metric=train_metric, unit="step", experiment=experiment,
                           skipped=str(exc))
    budget = None
    with contextlib.suppress(ValueError):
        budget = float(tags.get("advisor.budget") or "nan")
    budget = budget if budget == budget else None  # NaN: no budget tag
    step_column = "epoch" if "epoch" in curves.columns else "step"
    analysis = analyze_run(curves, monitor, mode, train_metric, step_column, run_id=info.run_id,
                           run_name=name, unit=unit, budget=budget, experiment=experiment,
                           **advisor_kwargs)
    analysis = dataclasses.replace(analysis, running=info.status == "RUNNING",
                                   **_checkpoint_facts(analysis, run, curves))
    return _as_pruned(analysis, tags) if tags.get("advisor.pruned") == "true" else analysis


def _checkpoint_facts(a: RunAnalysis, run: Any, curves: Any) -> dict[str, Any]:
    """How the run's trainer numbers epochs, and the best checkpoint's file when the callback
    named it for the same best check."""
    facts: dict[str, Any] = {}
    tags = run.data.tags
    if a.unit == "epoch":
        if "advisor/should_stop" in run.data.metrics:  # written by the Lightning callback
            facts["origin"] = "Lightning's"
        elif curves.attrs.get("epochs_from_zero"):
            facts["origin"] = "logged as"
    best = None if a.advice is None else a.advice.best_step
    checkpoint = tags.get("advisor.best_checkpoint")
    if checkpoint and best is not None and tags.get(f"advisor.best_{a.unit}") == step_text(best):
        facts["checkpoint"] = checkpoint
    return facts


def _as_pruned(a: RunAnalysis, tags: dict[str, str]) -> RunAnalysis:
    """A pruned run (tag ``advisor.pruned``) ends with the pruner's decision, as its trial
    and its description say, not with what the advisor alone would say at that check."""
    if a.advice is None or a.last_step is None:
        return a
    verdict = tags.get("advisor.verdict", "")
    advice = dataclasses.replace(
        a.advice, step=a.last_step, should_stop=True,
        verdict=Verdict(verdict) if verdict in {v.value for v in Verdict} else a.advice.verdict,
        reason=tags.get("advisor.reason") or a.advice.reason)
    history = list(a.history)
    row = advice_history_row(advice)
    if history and history[-1]["step"] == advice.step:
        history[-1] = row
    else:
        history.append(row)
    return dataclasses.replace(a, advice=advice, history=tuple(history), pruned=True)


def format_advice(a: RunAnalysis) -> str:
    """The advice of one run for the terminal, in the words of the run's description and
    report (:mod:`advisor.dashboards.story`): headline, reason, the checkpoint to keep, the
    stop's saving or cost, forecast, evidence."""
    advice, unit = a.advice, a.unit
    title = story.headline(advice, unit, a.budget, pruned=a.pruned, running=a.running)
    keep = story.keep_text(advice, unit, origin=a.origin, checkpoint=a.checkpoint,
                           missing=a.checkpoint_missing)
    lines = [f"run {a.run_id} ({a.run_name})" + (f" in {a.experiment}" if a.experiment else ""),
             f"verdict:  {title}", f"reason:   {advice.reason}", f"keep:     {keep}"]
    paid = story.paid_off_text(advice, unit)
    if paid is not None:
        lines.append(f"paid off: {paid}")
    cost = story.cost_sentence(a)
    if cost is not None:
        lines.append(f"{'cost:' if a.regret else 'saved:':<10}{cost[0].upper() + cost[1:]}")
    f = advice.forecast
    if f is not None:
        lines.append(f"forecast: {a.monitor} {f.value:.4g} at {unit} {step_text(f.step)} "
                     f"({f.level:.0%} interval {f.low:.4g} to {f.high:.4g})")
    if advice.expected_gain is not None and advice.expected_gain_interval is not None:
        lo, hi = advice.expected_gain_interval
        lines.append(f"gain:     {advice.expected_gain:.3g} expected from training on "
                     f"({lo:.3g} to {hi:.3g})")
    lines.append("evidence:")
    lines += [f"  {e.detector}: {e.summary}" for e in advice.evidence]
    return "\n".join(lines)


def advice_json(a: RunAnalysis) -> str:
    """The analysis as JSON: the summary row and the full advice."""
    data = a.summary()
    data["experiment"] = a.experiment
    data["advice"] = None if a.advice is None else a.advice.to_dict()
    return json.dumps(data, indent=2)


def default_out(experiment: str) -> Path:
    """``advisor-report-<experiment>`` in the working folder (name made file-safe)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in experiment).strip(".")
    return Path(f"advisor-report-{safe or 'experiment'}")


def _is_report(folder: Path) -> bool:
    index = folder / "index.html"
    if not index.is_file():
        return False
    with open(index, encoding="utf-8", errors="replace") as f:
        return f'content="{GENERATOR}"' in f.read(2000)


def check_out(out: Path) -> None:
    """``out`` must be free: missing, an empty folder, or an earlier report (replaced)."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_report(out))):
        raise ValueError(f"{out} exists and is not an advisor report; choose another --out.")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden folder next to ``out`` to write into; renamed to ``out`` when the block ends
    without an error, removed otherwise (an interrupt included)."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would make the report private
    try:
        yield stage
        check_out(out)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{stage.name.rsplit('-', 1)[-1]}")
            out.rename(old)
        stage.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@dataclass(frozen=True)
class ExperimentReport:
    """What ``advisor report`` found: the experiment, its analysed and skipped runs."""

    experiment: str
    experiment_id: str
    analyses: tuple[RunAnalysis, ...]

    @property
    def analysed(self) -> list[RunAnalysis]:
        return [a for a in self.analyses if a.advice is not None]

    @property
    def skipped(self) -> list[RunAnalysis]:
        return [a for a in self.analyses if a.advice is None]

    def summary_line(self) -> str:
        """The dashboard's summary (:func:`~advisor.dashboards.experiment.summary_text`): the
        saving, and the cost where runs got better after the advisor's stop."""
        return f"{self.experiment!r}: " + summary_text(self.analyses)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([a.summary() for a in self.analyses])


def _run_page(a: RunAnalysis) -> str:
    """A run's page; a plot that cannot be drawn costs the page its picture, never the report
    (the page says why)."""
    try:
        return run_report_html(a, run_plot_png(a))
    except Exception as exc:  # matplotlib on values it cannot draw: the rest of the page stays
        return run_report_html(a, plot_error=f"{type(exc).__name__}: {exc}")


def build_report(client: Any, experiment: Any, runs: list[Any], folder: Path,
                 progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
                 tracking_uri: str | None = None, **settings: Any) -> ExperimentReport:
    """Analyse every run and write the dashboard into ``folder``: ``index.html``, one
    ``runs/<run_id>.html`` per analysed run and ``summary.csv``.

    ``settings`` are ``monitor``, ``mode``, ``train_metric`` and further :class:`Advisor`
    settings. Raises :class:`TrackingError` when no run has the monitored metric.
    """
    name = experiment.name
    analyses = []
    (folder / "runs").mkdir()
    for run in progress(runs):
        a = analyze_mlflow_run(client, run, experiment=name, **settings)
        if a.advice is not None:
            links = [(f"all runs of {name}", "../index.html")]
            in_mlflow = mlflow_run_url(tracking_uri, experiment.experiment_id, a.run_id)
            if in_mlflow:
                links.append(("this run in MLflow", in_mlflow))
            a = dataclasses.replace(a, links=tuple(links))
            (folder / run_report_path(a.run_id)).write_text(_run_page(a), encoding="utf-8")
        analyses.append(a)
    report = ExperimentReport(name, experiment.experiment_id, tuple(analyses))
    if not report.analysed:
        monitor = settings.get("monitor", "val_loss")
        train = settings.get("train_metric")
        present = sorted({m for r in runs for m in r.data.metrics if not m.startswith("advisor/")})
        wanted = f"the monitored metric {monitor!r}" if monitor not in present or not train else (
            f"the train metric {train!r}")
        raise TrackingError(f"no run of experiment {name!r} has {wanted}; metrics present: "
                            f"{', '.join(present) or 'none'}.")
    (folder / "index.html").write_text(experiment_html(name, analyses, tracking_uri,
                                                       experiment_id=experiment.experiment_id),
                                       encoding="utf-8")
    report.frame().to_csv(folder / "summary.csv", index=False)
    return report

