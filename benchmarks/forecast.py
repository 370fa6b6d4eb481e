"""Forecast calibration: does the advisor's 90% interval for the final value cover the truth?

Each run's validation curve is fed to :class:`advisor.Advisor` (default settings, budget = the
run's last x value) check by check, as a user's training would; at the checks nearest 25%, 50% and
75% of the budget the advice's forecast for the end of the budget is compared with the value
actually reached at the last check. Target: 85-95% coverage at every horizon, per source, on the
holdout tasks (the extrapolation constant was calibrated on TaskSet's tune tasks only).

Usage: ``python -m benchmarks.forecast [--sources taskset,algoperf] [--max-runs-per-task 60]``.
Prints a table and writes ``forecast.json`` and ``forecast.md`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import warnings
from pathlib import Path

import numpy as np

from advisor import Advisor
from benchmarks._curves import Run, load_source, monitors_for, sample_runs, task_split

FRACTIONS = (0.25, 0.5, 0.75)


def coverage_of_run(job: tuple[Run, str, str]) -> list[dict]:
    """Forecast outcomes of one run at each budget fraction."""
    run, metric, mode = job
    values = run.metrics[metric]
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size < 8:
        return []
    x = run.x
    last = int(finite[-1])
    budget = float(x[last])
    truth = float(values[last])
    marks = {int(finite[np.argmin(np.abs(x[finite] - f * budget))]): f for f in FRACTIONS}
    advisor = Advisor(metric, mode, max_steps=budget)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in finite[finite < last]:
            advice = advisor.update(x[i], {metric: values[i]})
            if i in marks and advice.forecast is not None:
                f = advice.forecast
                width = (f.high - f.low) / max(abs(truth), 1e-12)
                out.append({"task": run.task, "source": run.source, "metric": metric,
                            "fraction": marks[i], "covered": bool(f.low <= truth <= f.high),
                            "relative_width": float(width),
                            "relative_error": float(abs(f.value - truth) / max(abs(truth), 1e-12)),
                            "model_relative_error": float(abs(f.model_value - truth)
                                                          / max(abs(truth), 1e-12))})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="taskset,algoperf")
    parser.add_argument("--max-runs-per-task", type=int, default=60)
    parser.add_argument("--split", choices=("tune", "holdout", "all"), default="holdout")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    jobs = []
    for source in args.sources.split(","):
        runs = load_source(source)
        split = task_split(source, [r.task for r in runs])
        runs = [r for r in runs if args.split == "all" or split[r.task] == args.split]
        for run in sample_runs(runs, args.max_runs_per_task, seed=0)[0]:
            for mon in monitors_for(run, "loss"):
                jobs.append((run, mon.metric, mon.mode))
    print(f"{len(jobs)} curves", file=sys.stderr)
    with mp.Pool(args.workers) as pool:
        rows = [r for part in pool.imap_unordered(coverage_of_run, jobs, chunksize=8)
                for r in part]
    table, result = [], {"split": args.split, "max_runs_per_task": args.max_runs_per_task,
                         "level": 0.9, "target": [0.85, 0.95], "by_source": {}}
    header = (f"{'source':<10}{'budget':>8}{'runs':>7}{'coverage':>10}{'median width':>14}"
              f"{'target':>8}{'median error: models / combined':>34}")
    table.append(header)
    for source in sorted({r["source"] for r in rows}):
        result["by_source"][source] = {}
        for frac in FRACTIONS:
            sel = [r for r in rows if r["source"] == source and r["fraction"] == frac]
            if not sel:
                continue
            cov = float(np.mean([r["covered"] for r in sel]))
            width = float(np.median([r["relative_width"] for r in sel]))
            ok = 0.85 <= cov <= 0.95
            err = float(np.median([r["relative_error"] for r in sel]))
            model_err = float(np.median([r["model_relative_error"] for r in sel]))
            result["by_source"][source][str(frac)] = {"runs": len(sel), "coverage": cov,
                                                      "median_relative_width": width,
                                                      "within_target": ok,
                                                      "median_relative_error": err,
                                                      "model_median_relative_error": model_err}
            table.append(f"{source:<10}{frac:>8.0%}{len(sel):>7}{cov:>10.3f}{width:>14.3f}"
                         f"{'PASS' if ok else 'MISS':>8}{model_err:>25.4f} / {err:.4f}")
    print("\n".join(table))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "forecast.json").write_text(json.dumps(result, indent=2))
    (out / "forecast.md").write_text(
        f"# Forecast calibration ({args.split} tasks, 90% interval for the final value)\n\n```\n"
        + "\n".join(table) + "\n```\n\nWidth: interval width relative to the final value. "
        "Error: the median distance of the point forecast to the final value, relative to it "
        "(the curve models' own value, and the one the advisor gives, combined with the latest "
        "checks' level).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
