"""The experiment dashboard: every run's verdict in one sortable table, and a grid of curves.

One self-contained HTML document: the small curves are inline SVG drawn here (no plotting
library, no files), the table sorts with a few lines of inline JavaScript, nothing is fetched.
Each row links to the run's own report at ``runs/<run_id>.html`` (written next to it by
``advisor report``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from . import story
from .analysis import RunAnalysis, plottable
from .html import esc, num, page, table, verdict_badge
from .plots import VERDICT_COLORS

__all__ = ["experiment_html", "mlflow_run_url", "run_report_path", "sparkline_svg",
           "summary_text"]

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, index) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    th.closest("tr").querySelectorAll("th").forEach(function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = th.dataset.type === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      var c;
      if (numeric) {
        x = x === "" ? NaN : parseFloat(x); y = y === "" ? NaN : parseFloat(y);
        c = isNaN(x) ? (isNaN(y) ? 0 : 1) : (isNaN(y) ? -1 : x - y);
        if (!ascending && !isNaN(x) && !isNaN(y)) c = -c;
        return c;
      }
      c = x.localeCompare(y, undefined, {numeric: true});  // trial-2 before trial-10
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_EXTRA_STYLE = """
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
.grid figure { margin: 0; border: 1px solid #e0e0e0; padding: 6px; }
.grid figcaption { font-size: 12px; word-break: break-all; }
.summary { font-size: 15px; }
body { max-width: none; }
#runs td.name { white-space: nowrap; }
#runs td .action { color: #616161; font-size: 12px; white-space: nowrap; }
"""


def run_report_path(run_id: str) -> str:
    """Where a run's report lies relative to the dashboard (run ids are MLflow's hex ids)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)
    return f"runs/{safe}.html"


def sparkline_svg(a: RunAnalysis, width: int = 240, height: int = 110) -> str:
    """A small inline SVG of the monitored curve, its best point and the advisor's stop."""
    points = [(x, y) for x, y in zip(a.steps, a.values, strict=True) if plottable(y)]
    label = f"{a.monitor} of {a.run_name}: {a.verdict}"
    if len(points) < 2:
        return (f'<svg class="spark" role="img" width="{width}" height="{height}">'
                f"<title>{esc(label)}</title></svg>")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(max(xs), a.budget or 0.0)
    y0, y1 = min(ys), max(ys)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 == y0 else (y0, y1)
    pad = 6

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1.0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    color = VERDICT_COLORS.get(a.verdict, "#616161")
    parts = [f'<svg class="spark" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{esc(label)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa"/>']
    stop = a.stop_step
    if a.stopped_early and stop is not None:
        parts.append(f'<rect x="{sx(stop):.1f}" y="0" width="{max(sx(x1) - sx(stop), 0):.1f}" '
                     f'height="{height}" fill="{color}" fill-opacity="0.15"/>'
                     f'<line x1="{sx(stop):.1f}" y1="0" x2="{sx(stop):.1f}" y2="{height}" '
                     f'stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"/>')
    parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="1.6" points="{line}"/>')
    advice = a.advice
    if advice is not None and advice.best_step is not None and advice.best_value is not None \
            and plottable(advice.best_value):
        parts.append(f'<circle cx="{sx(advice.best_step):.1f}" cy="{sy(advice.best_value):.1f}" '
                     f'r="3.5" fill="#212121"/>')
    parts.append("</svg>")
    return "".join(parts)


def _unit_label(analyses: Sequence[RunAnalysis]) -> tuple[str, bool]:
    units = {a.unit for a in analyses}
    return (units.pop(), False) if len(units) == 1 else ("", True)


def _cell(value: float | None, unit: str, with_unit: bool) -> str:
    shown = num(value)
    if with_unit and value is not None:
        shown = f"{esc(unit)} {shown}"
    data = "" if value is None or not math.isfinite(value) else repr(float(value))
    return f'<td class="num" data-value="{data}">{shown}</td>'


def summary_text(analyses: Sequence[RunAnalysis]) -> str:
    """The dashboard's summary: what the advisor's stops would have saved, and what they would
    have cost where runs went on past them and still got better."""
    done = [a for a in analyses if a.advice is not None]
    skipped = len(analyses) - len(done)
    unit, _ = _unit_label(done) if done else ("epoch", False)
    units = f"{unit}s" if unit else "epochs/steps"
    went_on = [a for a in done if a.stopped_early]
    saved = sum(a.saved_steps for a in went_on)
    spent = sum(a.last_step or 0.0 for a in done)
    share = f" ({saved / spent:.0%} of the {num(spent)} trained)" if spent else ""
    text = (f"{len(done)} run(s) analysed, {len(went_on)} of them went on after the advisor "
            f"would have stopped: {num(saved)} {units} could have been saved{share}")
    costly = [a for a in went_on if a.regret]
    if costly:
        worst = max(costly, key=lambda a: a.regret_share)
        mean = sum(a.regret_share for a in costly) / len(costly)
        text += (f"; but {len(costly)} of them got better after the stop: stopping would have "
                 f"kept a {worst.monitor} up to {worst.regret_share:.1%} worse than the run's "
                 f"best ({worst.run_name}" + (f"; {mean:.1%} on average over those {len(costly)}"
                                              if len(costly) > 1 else "") + ")")
    elif went_on:
        text += ", at no cost: none got better after the stop"
    return text + "." + (f" {skipped} run(s) skipped." if skipped else "")


def mlflow_run_url(tracking_uri: str | None, experiment_id: str | None,
                   run_id: str | None = None) -> str | None:
    """The run's (or the experiment's) page in the MLflow UI of an ``http(s)`` tracking server,
    else ``None`` (a local store has no UI address)."""
    if not tracking_uri or not experiment_id or not tracking_uri.startswith(("http://",
                                                                             "https://")):
        return None
    url = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}"
    return url + (f"/runs/{run_id}" if run_id else "")


def experiment_html(experiment: str, analyses: Sequence[RunAnalysis],
                    tracking_uri: str | None = None, link_reports: bool = True,
                    experiment_id: str | None = None) -> str:
    """The experiment dashboard: a summary line, a sortable table, a grid of curves and the
    runs that were skipped, with why. With an ``http(s)`` ``tracking_uri`` and the
    ``experiment_id``, the experiment and each run link to their MLflow pages."""
    done = [a for a in analyses if a.advice is not None]
    skipped = [a for a in analyses if a.advice is None]
    unit, mixed = _unit_label(done) if done else ("epoch", False)
    summary = summary_text(analyses)
    rows = []
    for a in done:
        name = esc(a.run_name)
        if link_reports:
            name = f'<a href="{esc(run_report_path(a.run_id))}">{name}</a>'
        in_mlflow = mlflow_run_url(tracking_uri, experiment_id, a.run_id)
        if in_mlflow:
            name += f' <a class="mlflow" href="{esc(in_mlflow)}" title="the run in MLflow">' \
                    "MLflow</a>"
        action = story.action(a.advice, a.unit, a.budget, pruned=a.pruned, running=a.running)
        went_on = a.stopped_early
        rows.append([f'<td class="name" data-value="{esc(a.run_name)}">{name}</td>',
                     f'<td data-value="{esc(a.verdict)}">{verdict_badge(a.verdict)}'
                     f'<div class="action">{esc(action)}</div></td>',
                     _cell(a.stop_step, a.unit, mixed), _cell(a.advice.best_step, a.unit, mixed),
                     _cell(a.saved_steps, a.unit, mixed),
                     _regret_cell(a.regret if went_on else None),
                     _share_cell(a.regret_share if went_on else None),
                     _cell(a.advice.best_value, "", False),
                     f'<td data-value="{esc(a.advice.reason)}">{esc(a.advice.reason)}</td>'])
    monitor = esc(done[0].monitor) if done else "value"
    columns = [("run", "text"), ("verdict", "text"), (f"stop {unit}".strip(), "number"),
               (f"best {unit} (keep)".strip(), "number"),
               (f"{unit}s that could have been saved" if unit else "could have been saved",
                "number"), (f"cost of the stop ({monitor})", "number"),
               ("cost of the stop (% of the best)", "number"), (f"best {monitor}", "number"),
               ("reason", "text")]
    runs_table = table([(label, f' data-type="{kind}"') for label, kind in columns], rows,
                       ' class="sortable" id="runs"')
    grid = []
    for a in done:
        caption = f"{esc(a.run_name)} · {verdict_badge(a.verdict)}"
        figure = sparkline_svg(a)
        if link_reports:
            figure = f'<a href="{esc(run_report_path(a.run_id))}">{figure}</a>'
        grid.append(f'<figure class="run" data-run-id="{esc(a.run_id)}">{figure}'
                    f"<figcaption>{caption}</figcaption></figure>")
    where = esc(f"experiment {experiment}" + (f" at {tracking_uri}" if tracking_uri else ""))
    experiment_url = mlflow_run_url(tracking_uri, experiment_id)
    if experiment_url:
        where += f' · <a href="{esc(experiment_url)}">open it in MLflow</a>'
    parts = [f"<h1>{esc(experiment)}</h1>", f'<p class="meta">{where}</p>',
             f'<p class="summary">{esc(summary)}</p>', "<h2>Runs</h2>", runs_table,
             "<h2>Curves</h2>",
             f'<p class="muted">{esc(done[0].monitor) if done else ""}: dot = best, dashed '
             "line = where the advisor would have stopped, shaded = what came after.</p>",
             f'<div class="grid">{"".join(grid)}</div>']
    if skipped:
        items = "".join(f"<li><strong>{esc(a.run_name)}</strong> ({esc(a.run_id)}): "
                        f"{esc(a.skipped)}</li>" for a in skipped)
        parts += ["<h2>Skipped</h2>", f'<ul class="skipped">{items}</ul>']
    return page(f"{experiment} - training-advisor", "\n".join(parts), _SORT_SCRIPT, _EXTRA_STYLE)


def _regret_cell(value: float | None) -> str:
    shown = "" if value is None else num(value)
    data = "" if value is None or not math.isfinite(value) else repr(float(value))
    return f'<td class="num" data-value="{data}">{shown}</td>'


def _share_cell(value: float | None) -> str:
    shown = "" if value is None else f"{value:.1%}"
    data = "" if value is None or not math.isfinite(value) else repr(float(value))
    return f'<td class="num" data-value="{data}">{shown}</td>'
