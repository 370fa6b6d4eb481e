"""One run's advice in the same words wherever it is shown.

The terminal (``advisor analyze``, the callback's message), the MLflow run's description and
tags, the plot, the run report, the experiment dashboard and Optuna's trial attributes take
their words from here, so they cannot drift apart:

- the headline: the verdict and what it means for the run now (``stop at epoch 55 of 100``,
  ``pruned at epoch 6 of 50``, ``completed its budget of 50 epochs``, ``keep training``);
- the checkpoint to keep: always the best check (``advice.best_step``), in the advisor's
  numbering and, where the trainer counts epochs from 0 as Lightning does, in the trainer's
  (``epoch 55 (Lightning's epoch=54)``, the number in ``epoch=54-step=550.ckpt``), with the file
  when a checkpoint callback kept it and how to keep it when none did;
- where training stopped paying off (``advice.suggested_stop_step``), said so that it cannot be
  read as a second checkpoint;
- what the advisor's stop saved, and what it would have cost where the run went on past it.

No I/O and no third-party imports.
"""

from __future__ import annotations

import math
from typing import Any

from ..advice import Advice
from ..history import step_text

__all__ = ["action", "at", "checkpoint_hint", "cost_sentence", "facts", "headline",
           "keep_text", "paid_off_text", "summary_tags"]


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def at(step: float | None, unit: str, origin: str | None = None) -> str:
    """``epoch 55``, and the trainer's own number where it counts epochs from 0:
    ``epoch 55 (Lightning's epoch=54)``; ``origin`` names that numbering (``"Lightning's"``,
    ``"logged as"``)."""
    if step is None:
        return f"{unit} n/a"
    text = f"{unit} {step_text(step)}"
    if origin and unit == "epoch":
        text += f" ({origin} epoch={step_text(step - 1)})"
    return text


def action(advice: Advice, unit: str, budget: float | None = None, *, pruned: bool = False,
           running: bool = False) -> str:
    """What the advice means for the run at its check, in a few words."""
    of = f" of {step_text(budget)}" if budget else ""
    where = f"{unit} {step_text(advice.step)}{of}"
    if pruned:
        return f"pruned at {where}"
    if advice.should_stop:
        return f"stop at {where}"
    if budget and advice.step >= budget and not running:
        return f"completed its budget of {step_text(budget)} {unit}s"
    return f"keep training, {where}"


def headline(advice: Advice, unit: str, budget: float | None = None, *, pruned: bool = False,
             running: bool = False) -> str:
    """``OVERFITTING (stop at epoch 55 of 100)``: the verdict and :func:`action`."""
    return (f"{advice.verdict.value.upper()} "
            f"({action(advice, unit, budget, pruned=pruned, running=running)})")


def checkpoint_hint(monitor: str, mode: str) -> str:
    """How to keep the best checkpoint with Lightning."""
    return (f'ModelCheckpoint(monitor="{monitor}", mode="{mode}", save_top_k=1) keeps it '
            f"(pass it to the Trainer's callbacks)")


def keep_text(advice: Advice, unit: str, *, origin: str | None = None,
              checkpoint: str | None = None, missing: bool = False) -> str:
    """The checkpoint to keep: the best check, its value and, when known, its file.

    ``checkpoint`` is the file a checkpoint callback saved at the best check; ``missing`` says
    that the trainer saved none of it (then the text says how to keep it)."""
    text = f"{at(advice.best_step, unit, origin)}, {advice.monitor} {_num(advice.best_value)}"
    if checkpoint:
        return f"{text}: {checkpoint}"
    if missing:
        return f"{text}, not saved: {checkpoint_hint(advice.monitor, advice.mode)}"
    return text


def paid_off_text(advice: Advice, unit: str) -> str | None:
    """Where training stopped paying off, when that is not simply the best check."""
    stop = advice.suggested_stop_step
    if stop is None:
        return None
    if advice.best_step is None or stop >= advice.best_step:
        return f"until {unit} {step_text(stop)}, the best check"
    plateau = advice.evidence_for("plateau")
    tolerance = None if plateau is None else plateau.details.get("tolerance")
    gain = ("less than the tolerance" if tolerance is None
            else f"less than the tolerance {tolerance:.3g}")
    return (f"until {unit} {step_text(stop)}: the {unit}s after it gained {gain}, the best check "
            f"({unit} {step_text(advice.best_step)}) included")


def cost_sentence(analysis: Any) -> str | None:
    """What the advisor's stop saved and, where the run went on past it, what it would have
    cost (``analysis`` is a :class:`~advisor.dashboards.RunAnalysis`); ``None`` when the advisor
    never said stop, or stopped the run at the end of its budget."""
    a = analysis
    unit = a.unit
    if not a.stopped_early:
        advice = a.advice
        if (advice is not None and advice.should_stop and a.budget and a.last_step is not None
                and a.budget > a.last_step and not a.pruned):
            return (f"The advisor's stop at {at(a.stop_step, unit)} saved "
                    f"{step_text(a.budget - a.last_step)} of the {step_text(a.budget)} {unit}s "
                    f"budgeted.")
        return None
    saved = (f"The run went on for {step_text(a.saved_steps)} {unit}(s) after the advisor's stop "
             f"at {at(a.stop_step, unit)}")
    regret = a.regret
    if regret is None:
        return saved + "."
    if regret <= 0:
        return (f"{saved}: they could have been saved at no cost (its best {a.monitor}, "
                f"{_num(a.kept_value)}, was already reached).")
    return (f"{saved}; stopping there would have kept {a.monitor} "
            f"{_num(a.kept_value)}, {regret:.3g} ({a.regret_share:.1%}) worse than the "
            f"{_num(a.final_best)} the run reached at {unit} {step_text(a.final_best_step)}.")


def facts(advice: Advice, unit: str, budget: float | None = None, *, origin: str | None = None,
          checkpoint: str | None = None, missing: bool = False,
          analysis: Any = None) -> list[tuple[str, str]]:
    """The advice's facts as ``(label, text)`` rows, for the run description and the report."""
    rows = [(f"best {advice.monitor} (keep this checkpoint)",
             f"{_num(advice.best_value)} at {at(advice.best_step, unit, origin)}")]
    if checkpoint:
        rows.append(("best checkpoint", checkpoint))
    elif missing:
        hint = checkpoint_hint(advice.monitor, advice.mode)
        rows.append(("best checkpoint", f"not saved: {hint}"))
    paid = paid_off_text(advice, unit)
    if paid is not None:
        rows.append(("training paid off", paid))
    if analysis is not None:
        a = analysis
        budget_note = f" (budget {step_text(a.budget)})" if a.budget else ""
        if a.stopped_early:
            regret = a.regret
            rows += [("advisor's stop", f"{unit} {_num(a.stop_step)}; the run went on to "
                                        f"{unit} {_num(a.last_step)}{budget_note}"),
                     (f"{unit}s that could have been saved", step_text(a.saved_steps)),
                     ("cost of the advisor's stop",
                      "n/a" if regret is None else "none" if regret <= 0 else
                      f"{regret:.3g} {a.monitor}, {a.regret_share:.1%} worse than the run's "
                      f"best ({_num(a.kept_value)} by the stop, {_num(a.final_best)} at "
                      f"{unit} {step_text(a.final_best_step)})")]
        elif advice.should_stop and not a.pruned:
            saved = (f": {step_text(a.budget - a.stop_step)} {unit}s saved"
                     if a.budget and a.stop_step is not None and a.budget > a.stop_step else "")
            rows.append(("advisor's stop", f"{unit} {_num(a.stop_step)}{budget_note}{saved}"))
        else:
            rows.append(("advisor's stop", f"none: trained to {unit} {_num(a.last_step)}"
                                           f"{budget_note}"))
    f = advice.forecast
    if f is not None:
        rows.append((f"forecast at {at(f.step, unit)}",
                     f"{_num(f.value)} ({f.level:.0%} interval {_num(f.low)} to {_num(f.high)})"))
    if advice.expected_gain is not None and advice.expected_gain_interval is not None:
        lo, hi = advice.expected_gain_interval
        rows.append(("expected gain from training on",
                     f"{_num(advice.expected_gain)} ({_num(lo)} to {_num(hi)})"))
    return rows


def summary_tags(advice: Advice, unit: str, budget: float | None = None, *,
                 pruned: bool = False, checkpoint: str | None = None) -> dict[str, str]:
    """The ``advisor.*`` tags of a run (the description is written next to them).

    ``advisor.suggested_stop_<unit>`` is written only when there is one: an empty tag shows as
    a bare chip in MLflow (a writer that wrote one before writes ``none``)."""
    tags = {
        "advisor.verdict": advice.verdict.value,
        "advisor.reason": advice.reason,
        f"advisor.best_{unit}": "" if advice.best_step is None else step_text(advice.best_step),
        "advisor.unit": unit,
    }
    if advice.suggested_stop_step is not None:
        tags[f"advisor.suggested_stop_{unit}"] = step_text(advice.suggested_stop_step)
    if budget:
        tags["advisor.budget"] = step_text(budget)
    if checkpoint:
        tags["advisor.best_checkpoint"] = checkpoint
    if pruned:
        tags["advisor.pruned"] = "true"
    return tags
