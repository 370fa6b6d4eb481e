"""One run's advice as a self-contained HTML page: verdict, reason, plot, evidence, timeline.

Self-contained: the plot is a PNG inside the page (a ``data:`` URI), styles are inline, there
are no scripts and nothing is fetched (the links back to the dashboard and to the run in MLflow
are plain anchors), so the page opens offline, from a file, an e-mail or the
MLflow artifact view. Every user-controlled string (run name, metric names, reasons, tags) goes
through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..history import step_text
from . import story
from .analysis import RunAnalysis
from .plots import VERDICT_COLORS

__all__ = ["STYLE", "esc", "num", "run_report_html", "verdict_badge"]

GENERATOR = "training-advisor"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121;
       margin: 0 auto; max-width: 1100px; padding: 16px 24px; }
h1 { font-size: 22px; margin: 8px 0 2px; word-break: break-word; }
h2 { font-size: 17px; margin: 24px 0 8px; }
.meta { color: #616161; margin: 0 0 12px; word-break: break-all; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
         font-weight: 600; text-transform: uppercase; font-size: 12px; letter-spacing: .03em; }
.verdict { border-left: 6px solid #9e9e9e; background: #fafafa; padding: 10px 14px; }
.verdict p { margin: 6px 0 0; }
img.plot { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 4px 10px 4px 0; text-align: left;
         vertical-align: top; }
th { font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; margin: 8px 0; }
.muted { color: #757575; }
.values { border-left: 6px solid #6a1b9a; background: #f3e5f5; padding: 6px 14px; }
"""


def esc(value: Any) -> str:
    """Text for HTML (element content and quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def num(value: Any, fmt: str = ".4g") -> str:
    """A number for a table cell; ``n/a`` for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt) if isinstance(value, int | float) else esc(value)


def verdict_badge(verdict: str) -> str:
    color = VERDICT_COLORS.get(verdict, "#616161")
    return f'<span class="badge verdict-{esc(verdict)}" style="background:{color}">' \
           f"{esc(verdict)}</span>"


def page(title: str, body: str, script: str = "", style: str = "") -> str:
    """A complete HTML document; ``title`` is escaped; ``body``, ``script`` and ``style`` are
    markup and code made here."""
    script = f"<script>{script}</script>" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"{GENERATOR}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}{style}</style></head>\n"
            f"<body>\n{body}\n{script}</body></html>\n")


def table(header: Iterable[str | tuple[str, str]], rows: Iterable[Iterable[str]],
          attrs: str = "") -> str:
    """A table of ready-made markup (escape the values first): header labels, or
    ``(label, attributes)`` pairs, and rows of ``<td>`` cells."""
    head = "".join(f"<th{h[1]}>{h[0]}</th>" if isinstance(h, tuple) else f"<th>{h}</th>"
                   for h in header)
    body = "\n".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _facts(a: RunAnalysis) -> str:
    advice, unit = a.advice, a.unit
    rows = story.facts(advice, unit, a.budget, origin=a.origin, checkpoint=a.checkpoint,
                       missing=a.checkpoint_missing, analysis=a)
    window = a.plateau_window
    if window is not None:
        rows.insert(-1 if advice.forecast is not None else len(rows),
                    ("plateau window", f"{unit}s {step_text(window[0])} to {step_text(window[1])}"))
    if a.overfitting_onset is not None:
        rows.append(("overfitting onset",
                     f"after {story.at(a.overfitting_onset, unit)}, the best check"))
    return table(["", ""], ([f"<th>{esc(k)}</th>", f"<td>{esc(v)}</td>"] for k, v in rows),
                 ' class="facts"')


def _evidence(a: RunAnalysis) -> str:
    rows = []
    for e in a.advice.evidence:
        interval = "" if e.interval is None else f"{num(e.interval[0])} to {num(e.interval[1])}"
        window = "" if e.window is None else f"{num(e.window[0])}-{num(e.window[1])}"
        rows.append([f"<td>{esc(e.detector)}</td>", f"<td>{esc(e.summary)}</td>",
                     f'<td class="num">{num(e.statistic, ".3g")}</td>',
                     f'<td class="num">{num(e.pvalue, ".2g")}</td>',
                     f"<td>{interval}</td>", f"<td>{window}</td>"])
    return table(["detector", "what it measured", "statistic", "p-value", "interval",
                  f"window ({a.unit}s)"], rows, ' class="evidence"')


def timeline_segments(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive checks with the same verdict, each with the reason at its last check."""
    segments: list[dict[str, Any]] = []
    for row in history:
        if segments and segments[-1]["verdict"] == row["verdict"]:
            segments[-1].update(last=row["step"], reason=row["reason"], checks=
                                segments[-1]["checks"] + 1)
        else:
            segments.append({"verdict": row["verdict"], "first": row["step"],
                             "last": row["step"], "reason": row["reason"], "checks": 1})
    return segments


def _timeline(a: RunAnalysis) -> str:
    rows = [[f"<td>{num(s['first'])}</td>", f"<td>{num(s['last'])}</td>",
             f'<td class="num">{s["checks"]}</td>', f"<td>{verdict_badge(s['verdict'])}</td>",
             f"<td>{esc(s['reason'])}</td>"] for s in timeline_segments(a.history)]
    every = [[f"<td>{num(r['step'])}</td>", f"<td>{esc(r['verdict'])}</td>",
              f'<td class="num">{num(r["best_value"])}</td>',
              f'<td class="num">{num(r["forecast"])}</td>',
              f'<td class="num">{num(r["trend_pvalue"], ".2g")}</td>',
              f"<td>{esc(r['reason'])}</td>"] for r in a.history]
    return (table([f"from {a.unit}", f"to {a.unit}", "checks", "verdict",
                   "reason (at the last check)"], rows, ' class="timeline"')
            + "<details><summary>every check</summary>"
            + table([a.unit, "verdict", "best", "forecast", "trend p", "reason"], every)
            + "</details>")


def run_report_html(analysis: RunAnalysis, plot_png: bytes | None = None,
                    plot_error: str | None = None) -> str:
    """The run's report as one HTML document (``plot_png`` from :func:`run_plot_png`; or
    ``plot_error``, why it could not be drawn). Values the plot leaves out (infinities, values
    too large to draw) are named."""
    a = analysis
    where = " · ".join(esc(p) for p in (
        a.experiment and f"experiment {a.experiment}", a.run_id and f"run {a.run_id}",
        f"{a.monitor} ({a.mode})", a.train_metric and f"train metric {a.train_metric}") if p)
    parts = [f"<h1>{esc(a.run_name)}</h1>", f'<p class="meta">{where}</p>']
    if a.links:
        parts.append('<p class="links">' + " · ".join(
            f'<a href="{esc(url)}">{esc(label)}</a>' for label, url in a.links) + "</p>")
    if a.advice is None:
        parts.append(f'<section class="verdict">{verdict_badge("skipped")}'
                     f"<p class=\"reason\">{esc(a.skipped)}</p></section>")
        return page(f"{a.run_name} - training-advisor", "\n".join(parts))
    advice = a.advice
    action = story.action(advice, a.unit, a.budget, pruned=a.pruned, running=a.running)
    color = VERDICT_COLORS.get(a.verdict, "#9e9e9e")
    keep = story.keep_text(advice, a.unit, origin=a.origin, checkpoint=a.checkpoint,
                           missing=a.checkpoint_missing)
    cost = story.cost_sentence(a)
    parts.append(f'<section class="verdict" style="border-color:{color}">'
                 f'{verdict_badge(a.verdict)} <strong class="action">{esc(action)}</strong>'
                 f'<p class="reason">{esc(advice.reason)}</p>'
                 f'<p class="keep">Keep: {esc(keep)}</p>'
                 + ("" if cost is None else f'<p class="cost">{esc(cost[0].upper() + cost[1:])}'
                    "</p>") + "</section>")
    notes = a.value_notes
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        parts.append(f'<section class="values"><h2>What is wrong with the values</h2>'
                     f"<ul>{items}</ul><p>These values are left out of the plot.</p></section>")
    if plot_error:
        parts.append(f'<p class="values">The plot could not be drawn: {esc(plot_error)}</p>')
    if plot_png:
        data = base64.b64encode(plot_png).decode("ascii")
        parts.append(f'<figure><img class="plot" alt="curves and advice of {esc(a.run_name)}" '
                     f'src="data:image/png;base64,{data}"></figure>')
    parts += ["<h2>Advice</h2>", _facts(a), "<h2>Evidence</h2>", _evidence(a),
              "<h2>Verdict timeline</h2>", _timeline(a)]
    return page(f"{a.run_name} - {a.verdict} - training-advisor", "\n".join(parts))
