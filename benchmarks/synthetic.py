"""Synthetic curve families with a known truth: how often a stop costs more than 1%.

Each run is a noise-free validation curve ``clean`` plus noise (three levels: 0.5%, 2% and 5% of
the curve's total improvement; half the runs with AR(1) noise, phi = 0.6), a training curve that
keeps improving, and the advisor in the configuration the callback runs: the training metric
given and the learning-rate plan known (a constant rate: no scheduler). Budgets of 50, 100, 300
and 1,000 checks.

Families:

- ``exponential``: ``c + a exp(-x / tau)``, tau drawn so that the last quarter still gains at
  least 2% of the total improvement (as every still-improving family but log-linear);
- ``log_linear``: ``c - b log(x)``: improves forever at a slowing pace;
- ``power``: ``c + a (x + x0) ** -alpha``;
- ``accuracy``: ``A - (A - a0) (x + x0) ** -alpha`` on a ``mode="max"`` metric;
- ``overfitting``: a fall to a minimum at 25-60% of the budget, then a rise (validation only;
  training keeps falling), so stopping after the minimum costs nothing and before it costs.

Stress families (added in session 8, after the defaults were frozen; reported, never tuned on):

- ``heavy_tailed``: the exponential family with Student-t noise (3 degrees of freedom, scaled to
  the same standard deviation): rare large deviations both ways;
- ``spiky``: the exponential family with a spike of 15 noise scales on 2% of the checks (a bad
  batch, an evaluation glitch);
- ``late_start``: flat at its initial level for 15-40% of the budget, then an exponential fall
  (a run that learns late: a stop on the flat start costs all of it);
- ``double_descent``: a fall, a bump after it and a second fall below the first minimum while
  training keeps falling: a stop on the bump costs (the overfitting test is wrong here by
  design: it cannot know that validation comes back).

A stress family added in session 15, after a stress sweep of new families found the fault it
shows (so it is not out of sample for the rule that fixed it):

- ``quantized_accuracy``: the accuracy family measured on a small validation set, the noisy
  value rounded to a multiple of ``1 / n_val`` (``n_val`` of 50, 100, 200 or 500): at 50 samples
  one sample (0.02) is several tolerances, and the checks sit on one level for a hundred checks
  while the accuracy still rises.

A savings family (added in session 12, after that session's change; reported, never tuned on):

- ``settled``: ``c + a exp(-x / tau)`` with tau 2-5% of the budget, so the curve is within 1% of
  its final value before 40% of it (``a exp(-x / tau) < 0.01 c``): every check after that is
  spent for less than 1%. What a stop saves
  here is the measure (the second-worst failure is a stop that saves nothing).

The true cost of a stop: the noise-free value at the checkpoint kept (the best noisy check up to
the stop) against the noise-free value at the checkpoint kept by training to the end, relative
to the latter. ``costly`` = true cost above 1%. Anchors: ``EarlyStopping`` with patience 10 and 20
on the same noisy values (restore-best semantics). Target (issue 11): costly stops of the advisor
on still-improving families <= 5%; on overfitting curves no more than patience 20's.

Usage: ``python -m benchmarks.synthetic [--per-cell 25] [--out benchmarks/results]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advisor import Advisor, LrPlan
from benchmarks.false_stops import patience_stop

FAMILIES = ("exponential", "log_linear", "power", "accuracy", "overfitting", "heavy_tailed",
            "spiky", "late_start", "double_descent", "settled", "quantized_accuracy")
IMPROVING = ("exponential", "log_linear", "power", "accuracy")
STRESS = ("heavy_tailed", "spiky", "late_start", "double_descent", "quantized_accuracy")
BUDGETS = (50, 100, 300, 1000)
NOISES = (0.005, 0.02, 0.05)
COSTLY = 0.01


def make_run(family: str, n: int, noise: float, seed: int) -> dict[str, Any]:
    """One run: noisy and clean validation, training curve, mode."""
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=float)
    mode = "min"
    while True:
        if family == "settled":
            clean = 0.2 + rng.uniform(0.5, 3) * np.exp(-x / (n * rng.uniform(0.02, 0.05)))
        elif family in ("exponential", "heavy_tailed", "spiky"):
            tau = n * rng.uniform(0.25, 1.0)
            clean = 0.2 + rng.uniform(0.5, 3) * np.exp(-x / tau)
        elif family == "log_linear":
            clean = 2.0 - rng.uniform(0.1, 0.3) * np.log(x)
        elif family in ("power", "accuracy", "quantized_accuracy"):
            alpha = float(np.exp(rng.uniform(np.log(0.05), np.log(1.2))))
            shape = (x + rng.uniform(0.0, 5.0)) ** -alpha
            if family == "power":
                clean = rng.uniform(0.05, 1.0) + rng.uniform(0.5, 3.0) * shape / shape[0]
            else:
                top = rng.uniform(0.7, 0.99)
                clean = top - (top - rng.uniform(0.1, 0.5)) * shape / shape[0]
                mode = "max"
        elif family == "late_start":
            onset = n * rng.uniform(0.15, 0.4)
            clean = 0.3 + rng.uniform(0.5, 3) * np.where(x < onset, 1.0,
                                                         np.exp(-(x - onset) / (0.2 * n)))
        elif family == "double_descent":
            m = n * rng.uniform(0.15, 0.3)
            clean = (0.4 + np.exp(-x / (m / 3)) + 0.15 * np.exp(-((x - 1.6 * m) / (0.5 * m)) ** 2)
                     - 0.2 / (1.0 + np.exp(-(x - 2.5 * m) / (0.1 * n))))
        else:  # overfitting
            m = n * rng.uniform(0.25, 0.6)
            clean = 0.3 + np.exp(-x / (m / 3)) + rng.uniform(0.05, 0.3) * np.clip(
                (x - m) / n, 0, None) ** rng.uniform(1.0, 2.0)
        total = abs(clean[0] - clean[-1]) if family != "overfitting" else clean[0] - clean.min()
        if family in ("overfitting", "log_linear", "late_start", "double_descent", "settled"):
            break  # log-linear improves forever by design; the others are shaped as they are
        late = abs(clean[int(0.75 * n) - 1] - clean[-1])
        if late >= 0.02 * total:  # (a power law cannot gain 5% in the last quarter of 1,000)
            break
    sd = noise * total
    e = rng.standard_t(3, n) / math.sqrt(3.0) if family == "heavy_tailed" else \
        rng.normal(0.0, 1.0, n)
    if seed % 2:  # AR(1) noise, the same marginal standard deviation
        phi = 0.6
        for i in range(1, n):
            e[i] = phi * e[i - 1] + math.sqrt(1 - phi**2) * e[i]
    values = clean + sd * e
    if family == "spiky":
        values = values + 15.0 * sd * (rng.random(n) < 0.02)
    if family == "quantized_accuracy":
        quantum = 1.0 / int(rng.choice([50, 100, 200, 500]))
        values = np.clip(np.round(values / quantum) * quantum, 0.0, 1.0)
    sign = 1.0 if mode == "min" else -1.0
    train_clean = clean - 0.1 * total if family not in ("overfitting", "double_descent") else \
        0.2 + np.exp(-x / (n / 8))
    train = train_clean + sign * 0.0 + 0.3 * sd * rng.normal(0, 1, n)
    if mode == "max":
        train = clean + 0.05 + 0.3 * sd * rng.normal(0, 1, n)
    return {"x": x, "values": values, "clean": clean, "train": train, "mode": mode}


def _stop_es(values: np.ndarray, mode: str, patience: int) -> int:
    """Where EarlyStopping(patience, min_delta=0) stops (1-based), in either mode."""
    return patience_stop(values if mode == "min" else -values, patience)


def _true_cost(run: dict[str, Any], stop: int) -> float:
    v, c, mode = run["values"], run["clean"], run["mode"]
    pick = (np.argmin if mode == "min" else np.argmax)
    kept, full = c[int(pick(v[:stop]))], c[int(pick(v))]
    gap = kept - full if mode == "min" else full - kept
    return max(gap, 0.0) / max(abs(full), 1e-12)


def replay(job: tuple[str, int, float, int, str]) -> dict[str, Any]:
    family, n, noise, seed, kwargs_json = job
    run = make_run(family, n, noise, seed)
    kwargs = json.loads(kwargs_json)
    monitor, train_metric = ("val_acc", "train_acc") if run["mode"] == "max" else \
        ("val_loss", "train_loss")
    adv = Advisor(monitor, run["mode"], train_metric, max_steps=float(n),
                  lr_plan=LrPlan((1.0,), (0.01,), "constant"), **kwargs)
    stop, verdict = n, ""
    for i in range(n):
        a = adv.update(run["x"][i], {monitor: float(run["values"][i]),
                                     train_metric: float(run["train"][i]), "lr": 0.01})
        if a.should_stop:
            stop, verdict = i + 1, a.verdict.value
            break
    row = {"family": family, "budget": n, "noise": noise, "seed": seed, "verdict": verdict}
    for name, s in (("advisor", stop), ("es_p10", _stop_es(run["values"], run["mode"], 10)),
                    ("es_p20", _stop_es(run["values"], run["mode"], 20))):
        row[f"{name}_saved"] = (n - s) / n
        row[f"{name}_cost"] = _true_cost(run, s)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=25,
                        help="runs per family x budget x noise level")
    parser.add_argument("--advisor-kwargs", default="{}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    jobs = [(f, n, s, 1000 * i + 17 * k + b, args.advisor_kwargs)
            for i, f in enumerate(FAMILIES) for b, n in enumerate(BUDGETS)
            for s in NOISES for k in range(args.per_cell)]
    jobs = [(f, n, s, seed * 7 + int(1000 * s), kw) for f, n, s, seed, kw in jobs]
    t0 = time.time()
    with mp.get_context("fork").Pool(args.workers) as pool:
        rows = pool.map(replay, jobs, chunksize=4)
    df = pd.DataFrame(rows)
    lines = ["| family | budget | n | advisor saved / costly % | p10 saved / costly % | "
             "p20 saved / costly % |", "|---|---|---|---|---|---|"]
    records = []
    for (fam, n), g in [*df.groupby(["family", "budget"]),
                        *(((f, "all"), g) for f, g in df.groupby("family"))]:
        cells = []
        rec: dict[str, Any] = {"family": fam, "budget": n, "n": len(g)}
        for rule in ("advisor", "es_p10", "es_p20"):
            saved = float(g[f"{rule}_saved"].mean())
            costly = float((g[f"{rule}_cost"] > COSTLY).mean())
            rec[rule] = {"saved": saved, "costly": costly}
            cells.append(f"{100 * saved:.1f} / {100 * costly:.1f}")
        records.append(rec)
        lines.append(f"| {fam} | {n} | {len(g)} | " + " | ".join(cells) + " |")
    improving = df[df.family.isin(IMPROVING)]
    over = df[df.family == "overfitting"]
    costly_impr = float((improving["advisor_cost"] > COSTLY).mean())
    costly_over = float((over["advisor_cost"] > COSTLY).mean())
    p20_over = float((over["es_p20_cost"] > COSTLY).mean())
    summary = (f"still-improving families: advisor costly stops {costly_impr:.1%} (target <= 5%: "
               f"{'PASS' if costly_impr <= 0.05 else 'MISS'}; patience 20: "
               f"{(improving['es_p20_cost'] > COSTLY).mean():.1%}); overfitting: advisor "
               f"{costly_over:.1%} vs patience 20 {p20_over:.1%} "
               f"({'PASS' if costly_over <= p20_over else 'MISS'})")
    stress = {f: {rule: float((g[f"{rule}_cost"] > COSTLY).mean())
                  for rule in ("advisor", "es_p20")}
              for f, g in df[df.family.isin(STRESS)].groupby("family")}
    summary += "\nstress families, costly stops advisor / patience 20: " + ", ".join(
        f"{f} {100 * c['advisor']:.1f}% / {100 * c['es_p20']:.1f}%" for f, c in stress.items())
    settled = df[df.family == "settled"]
    summary += ("\nsettled curves (within 1% of their end before 40% of the budget), "
                "saved / costly: ") + ", ".join(
        f"{label} {100 * settled[f'{rule}_saved'].mean():.1f}% / "
        f"{100 * (settled[f'{rule}_cost'] > COSTLY).mean():.1f}%"
        for label, rule in (("advisor", "advisor"), ("patience 10", "es_p10"),
                            ("patience 20", "es_p20")))
    title = f"Synthetic families ({len(df)} runs, {time.time() - t0:.0f} s)"
    print(title)
    print("\n".join(lines))
    print(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic.json").write_text(json.dumps(
        {"advisor_kwargs": json.loads(args.advisor_kwargs), "cells": records,
         "costly_improving": costly_impr, "costly_overfitting": costly_over,
         "p20_costly_overfitting": p20_over, "costly_stress": stress}, indent=2))
    (out / "synthetic.md").write_text(f"# {title}\n\nsaved / costly (true cost > 1%), in %\n\n"
                                      + "\n".join(lines) + f"\n\n{summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
