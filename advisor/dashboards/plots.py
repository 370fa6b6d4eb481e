"""One run's advice as a picture (PNG): curves, best step, plateau window, overfitting onset,
forecast with its interval to the end of the budget, and the verdict at every check.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
backend switch), so it is safe in a training process and in a background thread; matplotlib
is imported on first use.
"""

from __future__ import annotations

import io
from typing import Any

from ..history import step_text
from . import story
from .analysis import PLOT_LIMIT, RunAnalysis, plottable

__all__ = ["VERDICT_COLORS", "run_plot_png"]

VERDICT_COLORS = {
    "improving": "#2e7d32", "undecided": "#9e9e9e", "plateau": "#f9a825",
    "overfitting": "#c62828", "diverged": "#6a1b9a", "unpromising": "#6d4c41",
}
_MONITOR, _TRAIN, _FORECAST = "#1565c0", "#ef6c00", "#5e35b1"


def _label(text: str) -> str:
    """Text shown literally: no mathtext (``$``), no legend-hiding leading underscore."""
    return text.replace("$", r"\$")


def _finite(xs: tuple[float, ...], ys: tuple[float, ...] | None) -> tuple[list[float], list[float]]:
    if ys is None:
        return [], []
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if plottable(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def run_plot_png(analysis: RunAnalysis, width: float = 10.0, height: float = 6.0,
                 dpi: int = 100) -> bytes:
    """The run's curves and advice as PNG bytes (``width`` x ``height`` inches at ``dpi``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=(6, 1))
    _draw_curves(ax, analysis)
    _draw_timeline(strip, analysis)
    a = analysis
    title = a.verdict if a.advice is None else story.headline(
        a.advice, a.unit, a.budget, pruned=a.pruned, running=a.running)
    fig.suptitle(f"{a.run_name} — {title}", parse_math=False, fontsize=12)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _draw_curves(ax: Any, a: RunAnalysis) -> None:
    unit = a.unit
    x, y = _finite(a.steps, a.values)
    xt, yt = _finite(a.steps, a.train_values)
    if xt:
        ax.plot(xt, yt, color=_TRAIN, lw=1.2, alpha=0.8, label=f"train: {_label(a.train_metric)}")
    advice = a.advice
    # the curve after the advisor's stop is what the run spent for nothing (or little): faded
    stop = a.stop_step if advice is not None and advice.should_stop else None
    cut = len(x) if stop is None else sum(1 for s in x if s <= stop)
    marker = "o" if len(x) <= 60 else None
    ax.plot(x[:cut], y[:cut], color=_MONITOR, lw=1.8, marker=marker, ms=3,
            label=f"monitored: {_label(a.monitor)} ({a.mode})")
    if cut < len(x):
        regret = a.regret
        after = ("after the advisor's stop" + (
            f": it got {regret:.3g} ({a.regret_share:.1%}) better" if regret else
            ": no better"))
        ax.plot(x[max(cut - 1, 0):], y[max(cut - 1, 0):], color=_MONITOR, lw=1.4, alpha=0.35,
                marker=marker, ms=2, label=_label(after))
    if advice is not None:
        window = a.plateau_window
        if window is not None:
            ax.axvspan(window[0], window[1], color=VERDICT_COLORS["plateau"], alpha=0.18,
                       label=f"plateau window ({unit}s "
                             f"{step_text(window[0])}-{step_text(window[1])})")
        onset = a.overfitting_onset
        if onset is not None:
            ax.axvspan(onset, advice.step, color=VERDICT_COLORS["overfitting"], alpha=0.12,
                       label=f"overfitting after the best ({story.at(onset, unit)})")
            ax.axvline(onset, color=VERDICT_COLORS["overfitting"], lw=1.2, ls=":")
        if advice.best_step is not None and advice.best_value is not None \
                and plottable(advice.best_value):
            ax.plot([advice.best_step], [advice.best_value], marker="*", ms=16, color="#212121",
                    ls="none", label=f"keep: best {advice.best_value:.4g} at "
                                     f"{story.at(advice.best_step, unit, a.origin)}")
        if stop is not None:
            ax.axvline(stop, color="#212121", lw=1.4, ls="--",
                       label=f"advisor: stop at {story.at(stop, unit)}")
        _draw_forecast(ax, a, x, y)
    if a.budget:
        ax.set_xlim(left=min(x[0], 0.0) if x else 0.0, right=a.budget * 1.02)
    _set_ylim(ax, y + yt, advice.forecast if advice is not None else None)
    ax.set_ylabel(_label(a.monitor))
    ax.grid(alpha=0.3)
    # beside the plot, never over the curve, the best point or the stop line
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              borderaxespad=0.0)


def _set_ylim(ax: Any, values: list[float], forecast: Any) -> None:
    """Limits from the curves (and the forecast's value): a wide forecast interval is clipped,
    not allowed to squash the curves. Log scale when positive values span a wide range."""
    if not values:
        return
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > 30:
        ax.set_yscale("log")
        if forecast is not None and 0 < forecast.value <= PLOT_LIMIT:
            lo, hi = min(lo, forecast.value), max(hi, forecast.value)
        ax.set_ylim(lo / 1.5, hi * 1.5)
        return
    if forecast is not None and plottable(forecast.value):
        lo, hi = min(lo, forecast.value), max(hi, forecast.value)
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
    ax.set_ylim(lo - pad, hi + pad)


def _draw_forecast(ax: Any, a: RunAnalysis, x: list[float], y: list[float]) -> None:
    f = a.advice.forecast if a.advice is not None else None
    if f is None or not x or not all(plottable(v) for v in (f.value, f.low, f.high)):
        return
    start = max((i for i, s in enumerate(x) if s <= a.advice.step), default=len(x) - 1)
    ax.plot([x[start], f.step], [y[start], f.value], color=_FORECAST, ls="--", lw=1.2)
    ax.errorbar([f.step], [f.value], yerr=[[f.value - f.low], [f.high - f.value]],
                fmt="D", color=_FORECAST, capsize=5, ms=6,
                label=f"forecast at {story.at(f.step, a.unit)}: {f.value:.4g} "
                      f"({f.level:.0%} interval {f.low:.4g} to {f.high:.4g})")


def _draw_timeline(ax: Any, a: RunAnalysis) -> None:
    """A strip with the verdict of every check, coloured; a legend of the verdicts seen."""
    rows = list(a.history)
    steps = [float(r["step"]) for r in rows]
    seen: dict[str, None] = {}
    for i, row in enumerate(rows):
        left = steps[i - 1] if i else steps[i] - (steps[1] - steps[0] if len(steps) > 1 else 1)
        verdict = str(row["verdict"])
        seen[verdict] = None
        ax.broken_barh([(left, steps[i] - left)], (0, 1),
                       facecolors=VERDICT_COLORS.get(verdict, "#bdbdbd"))
    ax.set_yticks([])
    ax.set_ylim(0, 1)
    ax.set_xlabel(a.unit)
    ax.set_ylabel("verdict", rotation=0, ha="right", va="center", fontsize=9)
    if seen:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=VERDICT_COLORS.get(v, "#bdbdbd"), label=v) for v in seen],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  borderaxespad=0.0, ncols=2)
