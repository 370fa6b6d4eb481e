"""Cost of ``Advisor.update``: mean time per call over whole runs of 100 to 10,000 checks.

Each run feeds a noisy power-law validation curve, a training curve and a learning rate (the
metrics the Lightning callback passes), with a budget, so every detector and the forecast run;
once with the logged rate alone, once with the learning-rate plan too (a cosine schedule's rate at
every check, as the callback reads it from the trainer: the configuration users run), and once
with ``ReduceLROnPlateau``'s rule (factor 0.5, patience 5: the rate, halved after every six
checks without a new best, is logged at each check, and the rule reads its reductions).
Target: under 1 ms per update on average for histories up to 10,000 points. Timing is reported,
never asserted; run it on a quiet machine (the stopping benchmark's timings share the CPU with
its other worker).

Usage: ``python -m benchmarks.update_cost [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from advisor import Advisor, LrPlan, PlateauRule

PLANS = ("none", "cosine", "on plateau")


def _reduced_on_plateau(val: np.ndarray, lr0: float, factor: float = 0.5,
                        patience: int = 5) -> np.ndarray:
    """The rate each check trains with under torch's ``ReduceLROnPlateau`` (its defaults
    otherwise), stepped on ``val`` after each check."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience)
    rates = np.empty(val.size)
    for i, v in enumerate(val):
        rates[i] = opt.param_groups[0]["lr"]
        scheduler.step(float(v))
    return rates


def mean_update_ms(n: int, seed: int = 0, plan: str = "none") -> float:
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1, dtype=float)
    val = 0.5 + 2.0 * x**-0.5 + rng.normal(0, 0.01, n)
    train = val - 0.1 + rng.normal(0, 0.01, n)
    if plan == "on plateau":
        lr = _reduced_on_plateau(val, 1e-3)
        lr_plan = PlateauRule(0.5, 5)
    else:
        lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * x / n))
        lr_plan = LrPlan(tuple(x), tuple(lr), "CosineAnnealingLR") if plan == "cosine" else None
    advisor = Advisor("val_loss", "min", "train_loss", max_steps=float(n), lr_plan=lr_plan)
    start = time.perf_counter()
    for i in range(n):
        advisor.update(x[i], {"val_loss": val[i], "train_loss": train[i], "lr": lr[i]})
    return (time.perf_counter() - start) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rows = [(n, plan, mean_update_ms(n, plan=plan)) for plan in PLANS
            for n in (100, 1000, 10000)]
    lines = [f"{'checks per run':>15}{'plan':>12}{'mean ms / update':>18}{'target < 1 ms':>15}"]
    lines += [f"{n:>15}{plan:>12}{ms:>18.3f}{'PASS' if ms < 1 else 'MISS':>15}"
              for n, plan, ms in rows]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "update_cost.json").write_text(json.dumps(
        {"mean_ms_per_update": {str(n): ms for n, plan, ms in rows if plan == "none"},
         "mean_ms_per_update_with_plan": {str(n): ms for n, plan, ms in rows
                                          if plan == "cosine"},
         "mean_ms_per_update_on_plateau": {str(n): ms for n, plan, ms in rows
                                           if plan == "on plateau"},
         "target_ms": 1.0}, indent=2))
    (out / "update_cost.md").write_text("# Advisor.update cost\n\n```\n" + "\n".join(lines)
                                        + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
