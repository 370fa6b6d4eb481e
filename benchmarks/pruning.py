"""Pruning benchmark: hyperparameter sweeps replayed from real curves through real Optuna studies.

Method. For every task (and monitor) of ``../shared/curves/`` the population is the task's
configurations: TaskSet's 1,000 Adam configs per task; for AlgoPerf the external-tuning runs of
the workload (every submission's 5 hyperparameter points x 5 studies, ~100-165 runs; the
natural 5-trial sweeps are too small to prune in, and self-tuning runs have a 3x budget). A sweep
is a random ordered sample of ``--sweep-size`` configurations (default 50 for TaskSet, 15 for
AlgoPerf, whose populations are ~8x smaller), drawn afresh for each of ``--orders`` orders
(default 20; seeded). Each sweep is run as one in-memory Optuna study per rule (same
sweep for every rule): trial ``i`` replays configuration ``i``'s curve, ``trial.report(value, k)``
for evaluation ``k = 1, 2, ...`` and ``trial.should_prune()`` -> ``TrialPruned`` after each
report; a trial that runs to the end of its curve returns the best value it reported
(restore-best, as ``ModelCheckpoint`` does). Curves are replayed as the loader gives them:
TaskSet's diverged runs report NaN after their last finite value (as a trainer logs it, through
the full 51-evaluation grid); AlgoPerf curves end at the monitor's last finite value (the run
ended: budget, target reached or crash). A trial with no finite value returns NaN (FAIL).

Rules (``_sweeps.RULES``): ``Nop``, ``Median``, ``Percentile25``, ``SuccessiveHalving``,
``Hyperband`` (``max_resource`` = the budget) and ``Patient(Median)`` (patience 5), Optuna's
defaults otherwise; each also with ``+ES10``: Lightning's real ``EarlyStopping(patience=10)``
(``_rules.LightningEarlyStopping``, min_delta=0, a NaN stops at once) inside the trial, which
then completes with its best value (its decision at an evaluation depends only on the curve so
far, so it is run once per curve and memoised; checked after ``should_prune``, as Lightning runs
Optuna's pruning callback and ``EarlyStopping`` at the same validation end and a prune wins).
``Advisor``: ``AdvisorPruner(max_steps=budget)``, and after each report ``advise_trial(trial)``;
when ``advice.should_stop`` the trial returns ``advice.best_value`` (early COMPLETE).
``Advisor(Median)`` (``--rules all``; ~25% more run time): the same with
``wrapped_pruner=MedianPruner()``. Monitors: TaskSet val_loss; AlgoPerf val_loss and the workload
metric (``_curves.monitors_for``), reported separately.

Measures, per sweep and rule: epochs = evaluations reported by all trials, relative to
``Nop`` (which replays every curve in full); regret of the best COMPLETE trial's value against the
best configuration of the population, normalised by the population's spread:
``(value - best) / (median - best)`` over the configurations' best values, in the metric's
direction (0 = found the best configuration, 1 = no better than the median one). Aggregates:
mean of the per-sweep epoch ratio, mean and 90th percentile of regret over all sweeps of the
scope (every task has the same number of sweeps), on the fixed tune/holdout split of
``_curves.task_split`` (headline: holdout).

Target: the advisor uses at most half the epochs of the best anchor at equal or lower mean
regret. Anchors are the 11 rules other than the bare ``Nop`` (the reference of the epochs
column: it completes every trial in full, so no rule can have lower regret; it is the regret
floor, shown for context). Best anchor = lowest mean regret, ties broken by fewer epochs. Also
reported: the advisor's epochs against the cheapest anchor whose mean regret is <= the advisor's.

Usage (from the repository root)::

    python -m benchmarks.pruning                 # full run (20 orders, both sources)
    python -m benchmarks.pruning --quick         # smoke run: 4 tasks, 3 orders, sweeps of 20
    python -m benchmarks.pruning --sources taskset --orders 5 --tasks LSTM

Writes ``benchmarks/results/pruning.json`` and ``pruning.md``, and every sweep's row to
``benchmarks/.cache/pruning_sweeps.csv.gz``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import datetime as dt
import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # allow ``python benchmarks/pruning.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks._curves import DATA_DIR, load_source, task_split  # noqa: E402
from benchmarks._sweeps import ADVISORS, ANCHORS, RULES, Population, populations, run_sweep  # noqa: E402
from benchmarks.stopping import _fmt, _git_commit, _json_safe, render  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWEEP_SIZES = {"taskset": 50, "algoperf": 15}
QUICK_TASKS = {"taskset": ("LSTM128_avg_bs64", "LSTM128_bs64"), "algoperf": ("ogbg_jax", "wmt_jax")}
REFERENCE = "Nop"
TARGET_RATIO = 0.5
TIE = 1e-9  # mean regrets closer than this are equal (the same trials won)

# ----------------------------------------------------------------------------------------------
# Sweeps (run in worker processes; the populations are inherited through fork)

_POPS: list[Population] = []
DEFAULT_RULES = tuple(r for r in RULES if r != "Advisor(Median)")  # ~25% more time: opt in
_RULES: tuple[str, ...] = DEFAULT_RULES


def sweep_order(pop: Population, order: int, size: int, seed: int) -> np.ndarray:
    """The ``order``-th random ordered sample of ``size`` configurations (fixed per task)."""
    rng = np.random.default_rng([seed, order, zlib.crc32(pop.task.encode())])
    return rng.choice(len(pop.curves), size=min(size, len(pop.curves)), replace=False)


def _sweep_job(job: tuple[int, int, int, int]) -> list[dict[str, Any]]:
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # numpy's all-NaN slices
    p, order, size, seed = job
    pop = _POPS[p]
    idx = sweep_order(pop, order, size, seed)
    rows = []
    for rule in _RULES:
        t0 = time.perf_counter()
        res = run_sweep(pop, idx, rule, name=f"{pop.task}-{pop.metric}-{order}", seed=seed)
        rows.append({"pop": p, "order": order, "rule": rule, "s": time.perf_counter() - t0,
                     **res})
    return rows


def run_jobs(jobs: list[tuple[int, int, int, int]], workers: int) -> list[dict[str, Any]]:
    """Every sweep under every rule, longest first, on ``workers`` processes."""
    jobs = sorted(jobs, key=lambda j: -_POPS[j[0]].budget * j[2])
    rows: list[dict[str, Any]] = []
    t0, last = time.time(), 0.0
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    it = pool.imap_unordered(_sweep_job, jobs) if pool else map(_sweep_job, jobs)
    try:
        for done, res in enumerate(it, 1):
            rows.extend(res)
            now = time.time()
            if now - last > 15 or done == len(jobs):
                el = now - t0
                print(f"[pruning] {done}/{len(jobs)} sweeps, {el:.0f}s elapsed, "
                      f"~{el / done * (len(jobs) - done):.0f}s left", file=sys.stderr, flush=True)
                last = now
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return rows


# ----------------------------------------------------------------------------------------------
# Aggregation


def summarize(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per rule over the sweeps in ``df``: epochs vs Nop, regret mean / p90, and diagnostics."""
    out = {}
    for rule in RULES:
        g = df[df.rule == rule]
        if not len(g):
            continue
        reg = g.regret.to_numpy(dtype=float)
        out[rule] = {
            "sweeps": len(g),
            "epochs": float((g.epochs / g.full).mean()),
            "regret_mean": float(reg.mean()),
            "regret_p90": float(np.percentile(reg, 90)),
            "no_complete": int((g.value.isna()).sum()),
            "kept_winner": float((g.config.to_numpy() == g.winner.to_numpy()).mean()),
            "pruned": float(g.pruned.mean()), "early": float(g.early.mean()),
            "saved_pruned": float((g.saved_pruned / g.full).mean()),
            "saved_early": float((g.saved_early / g.full).mean()),
            "cpu_s": float(g.s.sum()),
        }
    return out


def target(s: dict[str, dict[str, float]], df: pd.DataFrame, rule: str) -> dict[str, Any]:
    """The advisor ``rule`` against the best anchor and the cheapest anchor as good as it."""
    anchors = {k: s[k] for k in ANCHORS if k in s and k != REFERENCE}
    if not anchors:
        raise SystemExit("the target needs at least one anchor besides Nop (see --rules)")
    a = s[rule]
    low = min(r["regret_mean"] for r in anchors.values())
    best = min((k for k in anchors if anchors[k]["regret_mean"] <= low + TIE),
               key=lambda k: anchors[k]["epochs"])
    b = anchors[best]
    ratio = a["epochs"] / b["epochs"]
    ok = ratio <= TARGET_RATIO and a["regret_mean"] <= b["regret_mean"] + TIE
    paired = df.pivot_table(index=["pop", "order"], columns="rule", values="regret")
    diff = (paired[rule] - paired[best]).to_numpy()
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    as_good = [k for k in anchors if anchors[k]["regret_mean"] <= a["regret_mean"] + TIE]
    cheap = min(as_good, key=lambda k: anchors[k]["epochs"]) if as_good else None
    return {
        "rule": rule, "pass": bool(ok), "best_anchor": best, "epochs_ratio": ratio,
        "regret": a["regret_mean"], "anchor_regret": b["regret_mean"],
        "regret_diff_mean": float(diff.mean()), "regret_diff_se": se,
        "cheapest_as_good": cheap,
        "epochs_ratio_vs_cheapest": a["epochs"] / anchors[cheap]["epochs"] if cheap else None,
        "nop_regret": s[REFERENCE]["regret_mean"],
    }


def target_line(label: str, t: dict[str, Any]) -> str:
    cheap = (f"cheapest anchor with mean regret <= the advisor's: {t['cheapest_as_good']} "
             f"(epochs ratio {t['epochs_ratio_vs_cheapest']:.2f})" if t["cheapest_as_good"]
             else "no anchor has mean regret <= the advisor's")
    return (f"{'PASS' if t['pass'] else 'MISS'} {label} {t['rule']}: epochs "
            f"{t['epochs_ratio']:.2f}x the best anchor {t['best_anchor']} (need <= "
            f"{TARGET_RATIO}), mean regret {t['regret']:.3f} vs {t['anchor_regret']:.3f} (paired "
            f"diff {t['regret_diff_mean']:+.3f} +- {1.96 * t['regret_diff_se']:.3f}); {cheap}; "
            f"Nop's regret floor {t['nop_regret']:.3f}")


# ----------------------------------------------------------------------------------------------
# Report


def rule_table(sums: dict[str, dict[str, dict]], md: bool) -> str:
    """Rows = rules; per scope: epochs vs Nop, mean regret, p90 regret."""
    labels = list(sums)
    headers = ["rule"] + [f"{lab} {c}" for lab in labels for c in ("epochs", "regret", "p90")]
    rows = []
    for rule in [r for r in RULES if any(r in s for s in sums.values())]:
        cells = [rule]
        for lab in labels:
            r = sums[lab].get(rule)
            cells += [_fmt(r["epochs"]), f"{r['regret_mean']:.3f}", f"{r['regret_p90']:.3f}"] \
                if r else ["-"] * 3
        rows.append(cells)
    return render(headers, rows, md)


def diag_table(sums: dict[str, dict[str, dict]], md: bool) -> str:
    """Per scope and rule: trials pruned / finished early per sweep, share of the full epochs
    each saved, and the share of sweeps whose best COMPLETE trial is Nop's (the sweep's best)."""
    rows = [[lab, rule, f"{r['pruned']:.1f}", f"{r['early']:.1f}", _fmt(r["saved_pruned"], True),
             _fmt(r["saved_early"], True), _fmt(r["kept_winner"], True), str(r["no_complete"]),
             f"{r['cpu_s']:.0f}"]
            for lab, s in sums.items() for rule, r in s.items()]
    return render(["scope", "rule", "pruned/sweep", "early/sweep", "saved by pruning%",
                   "saved early%", "kept winner%", "no COMPLETE", "cpu s"], rows, md)


def winner_table(df: pd.DataFrame, md: bool) -> str:
    """Per scope and advisor rule: what happened to each sweep's best configuration (share of
    sweeps): ran to the end, finished early, pruned in the first quarter of its curve or later,
    and for the pruned, which of the advisor's two chances was the low one."""
    rows = []
    adv = df[df.rule.isin(ADVISORS)]
    adv = adv.assign(scope=adv.label + " " + adv.split)
    for (lab, rule), g in adv.groupby(["scope", "rule"], sort=True):
        pruned = g[g.winner_fate == "pruned"]
        early = pruned.winner_step <= 0.25
        by_forecast = (pruned.winner_pf.astype(float) <= pruned.winner_pp.astype(float)).sum()
        rows.append([lab, rule, str(len(g)), _fmt(float((g.winner_fate == "ran").mean()), True),
                     _fmt(float((g.winner_fate == "early").mean()), True),
                     _fmt(float(early.sum() / len(g)), True),
                     _fmt(float((~early).sum() / len(g)), True),
                     f"{by_forecast}/{len(pruned)}"])
    return render(["scope", "rule", "sweeps", "ran%", "finished early%", "pruned <=25%",
                   "pruned later%", "forecast was the low chance"], rows, md)


TASK_RULES = ("Median", "Median+ES10", "Hyperband", "Patient(Median)+ES10", "Nop+ES10",
              *ADVISORS)


def task_table(per_task: dict[str, dict[str, dict]], pops: dict[str, Population],
               md: bool) -> str:
    rules = [r for r in TASK_RULES if any(r in s for s in per_task.values())]
    rows = []
    for key, s in per_task.items():
        p = pops[key]
        rows.append([p.task.removeprefix("FixedTextRNNClassification_imdb_"), p.metric,
                     str(len(p.curves)), str(s["Nop"]["sweeps"]),
                     f"{s['Nop']['regret_mean']:.2f}",
                     *[f"{s[r]['epochs']:.2f}/{s[r]['regret_mean']:.2f}" if r in s else "-"
                       for r in rules]])
    return render(["task", "metric", "configs", "sweeps", "Nop regret", *rules], rows, md)


def report(df: pd.DataFrame, pops: list[Population], meta: dict[str, Any], out_dir: Path) -> None:
    """Print the tables and the target check; write pruning.json and pruning.md."""
    df = df.sort_values(["pop", "order"], kind="stable")
    df = df.assign(label=[pops[p].label for p in df["pop"]], split=[
        meta["split"][pops[p].source][pops[p].task] for p in df["pop"]])
    labels = [lab for lab in ("taskset", "algoperf/loss", "algoperf/workload")
              if lab in set(df.label)]
    sums = {spl: {lab: summarize(df[(df.split == spl) & (df.label == lab)]) for lab in labels
                  if ((df.split == spl) & (df.label == lab)).any()} for spl in ("holdout", "tune")}
    targets = {spl: {lab: [target(s, df[(df.split == spl) & (df.label == lab)], r)
                           for r in ADVISORS if r in s] for lab, s in by.items()}
               for spl, by in sums.items()}
    keys = {p: f"{pops[p].source}|{pops[p].task}|{pops[p].metric}" for p in sorted(set(df["pop"]))}
    per_task = {keys[p]: summarize(g) for p, g in df.groupby("pop")}
    by_key = {keys[p]: pops[p] for p in keys}

    intro = (f"# Pruning benchmark\n\n{meta['date']}, commit `{meta['git_commit']}`, "
             f"{meta['orders']} orders per task, sweeps of {meta['sweep_sizes']} configs, "
             f"{meta['sweeps']} sweeps in {meta['wall_s']:.0f} s. epochs = evaluations used / "
             "Nop's (every curve in full); regret = (best COMPLETE value - best config) / "
             "(median config - best config), 0 = best config, 1 = median config; mean and 90th "
             "percentile over sweeps. Method and definitions: `benchmarks/pruning.py`.\n")
    md, txt = [intro], []
    for spl, by in sums.items():
        if not by:
            continue
        title = f"{'Headline' if spl == 'holdout' else 'Secondary'}: {spl} tasks"
        md.append(f"## {title}\n\n{rule_table(by, True)}\n")
        txt.append(f"\n== {title}\n{rule_table(by, False)}")
        lines = [target_line(lab, t) for lab, ts in targets[spl].items() for t in ts]
        md.append(f"### Target ({spl})\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
        txt.append(f"\n== Target ({spl})\n" + "\n".join(lines))
    all_sums = {f"{lab} {spl}": s for spl, by in sums.items() for lab, s in by.items()}
    md.append(f"## Where the epochs go\n\n{diag_table(all_sums, True)}\n")
    txt.append(f"\n== Where the epochs go\n{diag_table(all_sums, False)}")
    h = "What the advisor did to each sweep's best configuration"
    md.append(f"## {h}\n\n{winner_table(df, True)}\n")
    txt.append(f"\n== {h}\n{winner_table(df, False)}")
    h = "Per task (epochs vs Nop / mean regret)"
    md.append(f"## {h}\n\n{task_table(per_task, by_key, True)}\n")
    txt.append(f"\n== {h}\n{task_table(per_task, by_key, False)}")
    md.append("## Settings\n\n```json\n" + json.dumps(_json_safe(
        {k: v for k, v in meta.items() if k != "split"}), indent=1) + "\n```\n")
    print("\n".join(txt))

    payload = {
        **meta, "targets": targets, "pooled": sums,
        "per_task": {k: {"split": meta["split"][p.source][p.task], "configs": len(p.curves),
                         "budget": p.budget, "best": p.best, "median": p.median,
                         "rules": per_task[k]} for k, p in by_key.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pruning.json").write_text(json.dumps(_json_safe(payload), indent=1) + "\n")
    (out_dir / "pruning.md").write_text("\n".join(md))
    print(f"\nwrote {out_dir / 'pruning.json'} and {out_dir / 'pruning.md'}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="taskset,algoperf", help="comma-separated sources")
    p.add_argument("--tasks", default="", help="comma-separated substrings; keep matching tasks")
    p.add_argument("--orders", type=int, default=20, help="random sweeps (orders) per task")
    p.add_argument("--sweep-size", type=int, default=None,
                   help=f"configs per sweep (default: {SWEEP_SIZES})")
    p.add_argument("--monitor", choices=("loss", "workload", "both"), default="both",
                   help="algoperf monitors: val_loss, the workload metric, or both")
    p.add_argument("--rules", default="",
                   help=f"'all' or a comma-separated subset of {', '.join(RULES)} (Nop is "
                        f"always run); default: all but Advisor(Median)")
    p.add_argument("--pruner-kwargs", default=None,
                   help="JSON object of further AdvisorPruner settings (for tuning)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (at most 2 cores here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: tasks {QUICK_TASKS}, 3 orders, sweeps of 20")
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--sweeps-csv", type=Path,
                   default=ROOT / "benchmarks" / ".cache" / "pruning_sweeps.csv.gz",
                   help="every sweep x rule row (for digging into failures)")
    args = p.parse_args(argv)
    if args.pruner_kwargs:  # read by each worker's AdvisorPruner (benchmarks._sweeps._advisor)
        json.loads(args.pruner_kwargs)
        os.environ["ADVISOR_PRUNER_KWARGS"] = args.pruner_kwargs
    if args.quick:
        args.orders, args.sweep_size = min(args.orders, 3), args.sweep_size or 20
        args.tasks = args.tasks or ",".join(t for ts in QUICK_TASKS.values() for t in ts)
    return args


def _advisor_sha1() -> str:
    """A hash of the advisor package's sources: which version of the pruner was measured."""
    import advisor

    h = hashlib.sha1()
    for f in sorted(Path(advisor.__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def main(argv: Sequence[str] | None = None) -> int:
    global _RULES
    args = parse_args(argv)
    advisor_sha1 = _advisor_sha1()  # before the workers import it
    if args.rules:
        chosen = {REFERENCE, *(RULES if args.rules == "all" else args.rules.split(","))}
        if chosen - set(RULES):
            raise SystemExit(f"unknown rules: {sorted(chosen - set(RULES))}")
        _RULES = tuple(r for r in RULES if r in chosen)
    t0 = time.time()
    wanted = [t for t in args.tasks.split(",") if t]
    splits: dict[str, dict[str, str]] = {}
    sizes: dict[str, int] = {}
    jobs: list[tuple[int, int, int, int]] = []
    for source in [s for s in args.sources.split(",") if s]:
        runs = load_source(source, args.data)
        splits[source] = task_split(source, {r.task for r in runs})
        if wanted:  # exact task names first, else substrings
            exact = [w for w in wanted if w in splits[source]]
            runs = [r for r in runs if r.task in exact or (
                not exact and any(w in r.task for w in wanted))]
        sizes[source] = args.sweep_size or SWEEP_SIZES[source]
        for pop in populations(runs, args.monitor):
            _POPS.append(pop)
            jobs += [(len(_POPS) - 1, o, sizes[source], args.seed) for o in range(args.orders)]
    print(f"[pruning] {len(_POPS)} populations, {len(jobs)} sweeps x {len(_RULES)} rules, "
          f"loaded in {time.time() - t0:.0f}s", file=sys.stderr)
    rows = run_jobs(jobs, args.jobs)
    df = pd.DataFrame(rows)
    winners = df[df.rule == REFERENCE].set_index(["pop", "order"]).config
    df["winner"] = [winners[(p, o)] for p, o in zip(df["pop"], df["order"], strict=True)]
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rules": list(_RULES), "anchors": [a for a in ANCHORS if a != REFERENCE and a in _RULES],
        "orders": args.orders, "sweep_sizes": sizes, "sweeps": len(jobs),
        "split": splits, "wall_s": round(time.time() - t0, 1),
        "advisor_source_sha1": advisor_sha1,
    }
    report(df, _POPS, meta, args.out)
    if args.sweeps_csv:
        args.sweeps_csv.parent.mkdir(parents=True, exist_ok=True)
        df.assign(task=[_POPS[p].task for p in df["pop"]],
                  metric=[_POPS[p].metric for p in df["pop"]]).to_csv(args.sweeps_csv,
                                                                       index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
