"""Markdown and table rows that show one run's advice (MLflow renders the run description)."""

from __future__ import annotations

from typing import Any

from ..advice import Advice

__all__ = ["advice_history_row", "advice_markdown"]

def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _escape(text: str) -> str:
    """Keep user-controlled text (metric names, reasons) from being read as markdown/HTML."""
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def advice_markdown(advice: Advice, unit: str = "epoch", budget: float | None = None,
                    checkpoint: str | None = None) -> str:
    """A short summary for the run description: the verdict on the first line, then the facts."""
    verdict = advice.verdict.value
    action = "stop" if advice.should_stop else "keep training"
    of_budget = f" of {budget:g}" if budget else ""
    lines = [
        f"**training-advisor: {verdict.upper()}** ({action}, "
        f"{unit} {advice.step:g}{of_budget})",
        "",
        _escape(advice.reason),
        "",
        "| | |",
        "|---|---|",
        f"| best {_escape(advice.monitor)} | {_num(advice.best_value)} at {unit} "
        f"{_num(advice.best_step)} |",
    ]
    if advice.suggested_stop_step is not None:
        lines.append(f"| suggested stop | {unit} {advice.suggested_stop_step:g} |")
    if checkpoint:
        lines.append(f"| best checkpoint | `{checkpoint}` |")
    f = advice.forecast
    if f is not None:
        lines.append(f"| forecast at {unit} {f.step:g} | {_num(f.value)} ({f.level:.0%} interval "
                     f"{_num(f.low)} to {_num(f.high)}) |")
    if advice.expected_gain is not None and advice.expected_gain_interval is not None:
        lo, hi = advice.expected_gain_interval
        lines.append(f"| expected gain from training on | {_num(advice.expected_gain)} "
                     f"({_num(lo)} to {_num(hi)}) |")
    lines += ["", f"_Updated at {unit} {advice.step:g}; evidence in the `advisor/` metrics and "
                  "`advice.json`._"]
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
