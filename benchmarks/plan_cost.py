"""Cost of reading the learning-rate plan at fit start: stepping copies of the schedulers to a
10,000-step budget (checks every 100 steps, or per epoch of 100 steps with per-batch schedulers).

The plan is computed once at fit start (and after a resume or a scheduler change), so this is a
one-off cost per fit, not per check. Target: under 50 ms for a 10,000-step budget. Timing is
reported, never asserted; run it on a quiet machine.

Usage: ``python -m benchmarks.plan_cost [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.optim import lr_scheduler as sch

from advisor.callbacks._lr_plan import plan_schedulers

STEPS, PER_EPOCH = 10_000, 100


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


CASES = {  # name: (factory, interval)
    "MultiStepLR (per epoch)": (lambda o: sch.MultiStepLR(o, [50, 75], 0.1), "epoch"),
    "CosineAnnealingLR (per step)": (lambda o: sch.CosineAnnealingLR(o, STEPS), "step"),
    "OneCycleLR (per step)": (lambda o: sch.OneCycleLR(o, 0.1, total_steps=STEPS), "step"),
    "warm-up + cosine LambdaLR (per step)": (lambda o: sch.LambdaLR(o, functools.partial(
        _warmup_cosine, warmup=500, total=STEPS)), "step"),
    "SequentialLR linear+cosine (per step)": (lambda o: sch.SequentialLR(o, [
        sch.LinearLR(o, 0.01, total_iters=500), sch.CosineAnnealingLR(o, STEPS - 500)], [500]),
        "step"),
    "CyclicLR (per step)": (lambda o: sch.CyclicLR(o, 1e-3, 0.1, step_size_up=1000), "step"),
}


def plan_ms(factory, interval: str, unit: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        p = torch.nn.Parameter(torch.zeros(10))
        opt = torch.optim.AdamW([p], lr=0.1)
        scheduler = factory(opt)
        start = time.perf_counter()
        plan_schedulers(opt, [(scheduler, interval, 1)], start_epoch=0,
                        max_epochs=STEPS // PER_EPOCH, steps_per_epoch=PER_EPOCH, unit=unit,
                        max_steps=STEPS)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rows = [(name, unit, plan_ms(factory, interval, unit))
            for name, (factory, interval) in CASES.items() for unit in ("epoch", "step")]
    lines = [f"{'scheduler':<40}{'checks in':>10}{'ms (best of 5)':>16}{'target < 50 ms':>16}"]
    lines += [f"{name:<40}{unit + 's':>10}{ms:>16.1f}{'PASS' if ms < 50 else 'MISS':>16}"
              for name, unit, ms in rows]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan_cost.json").write_text(json.dumps(
        {"budget_steps": STEPS, "steps_per_epoch": PER_EPOCH, "target_ms": 50.0,
         "ms": [{"scheduler": n, "unit": u, "ms": ms} for n, u, ms in rows]}, indent=2))
    (out / "plan_cost.md").write_text("# Learning-rate plan cost (10,000-step budget)\n\n```\n"
                                      + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
