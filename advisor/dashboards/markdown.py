"""Markdown and table rows that show one run's advice (MLflow renders the run description)."""

from __future__ import annotations

from typing import Any

from ..advice import Advice
from . import story

__all__ = ["advice_history_row", "advice_markdown"]

def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _escape(text: str) -> str:
    """Keep user-controlled text (metric names, reasons) from being read as markdown/HTML."""
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def advice_markdown(advice: Advice, unit: str = "epoch", budget: float | None = None,
                    checkpoint: str | None = None, *, pruned: bool = False,
                    origin: str | None = None, missing: bool = False,
                    analysis: Any = None) -> str:
    """A short summary for the run description: the headline on the first line (the verdict
    and what it means for the run), the reason, then the facts (:func:`story.facts`): the
    checkpoint to keep, where training stopped paying off, the stop's saving or cost (with
    ``analysis``), the forecast."""
    lines = [f"**training-advisor: {story.headline(advice, unit, budget, pruned=pruned)}**", "",
             _escape(advice.reason)]
    if analysis is not None and (cost := story.cost_sentence(analysis)) is not None:
        lines += ["", _escape(cost[0].upper() + cost[1:])]
    lines += ["", "| | |", "|---|---|"]
    for label, text in story.facts(advice, unit, budget, origin=origin, checkpoint=checkpoint,
                                   missing=missing, analysis=analysis):
        shown = f"`{text}`" if label == "best checkpoint" and text == checkpoint else \
            _escape(text)
        lines.append(f"| {_escape(label)} | {shown} |")
    lines += ["", f"_Updated at {story.at(advice.step, unit)}; evidence in the `advisor/` "
                  "metrics and `advice.json`._"]
    return "\n".join(lines)


def advice_history_row(advice: Advice) -> dict[str, Any]:
    """One flat row per check for the advice history CSV."""
    plateau = advice.evidence_for("plateau")
    f = advice.forecast
    return {
        "step": advice.step, "verdict": advice.verdict.value, "should_stop": advice.should_stop,
        "best_step": advice.best_step, "best_value": advice.best_value,
        "suggested_stop_step": advice.suggested_stop_step,
        "trend_pvalue": None if plateau is None else plateau.pvalue,
        "slope": None if plateau is None else plateau.details.get("slope"),
        "forecast": None if f is None else f.value,
        "forecast_low": None if f is None else f.low,
        "forecast_high": None if f is None else f.high,
        "expected_gain": advice.expected_gain, "reason": advice.reason,
    }
