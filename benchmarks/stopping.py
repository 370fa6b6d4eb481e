"""Stopping benchmark: replay real validation curves through the advisor and the anchor rules.

Every run's curve is fed one evaluation at a time to each rule (a rule sees only the values up to
the current evaluation); the stop is the first evaluation where the rule says stop, else the last.
With restore-best semantics the kept value is the best monitored value up to the stop. Per rule,
source, task and group we report the share of evaluations saved, the relative regret of the kept
value (mean, 90th percentile) and the share of harmful stops (regret > 1%), on a fixed tune/holdout
split of the tasks (see ``_curves.task_split``).

Rules: ``advisor`` (``advisor.Advisor``, default settings or ``--advisor-kwargs``), Lightning
``EarlyStopping`` (patience 3/5/10/20), Prechelt's GL/PQ/UP, Ray Tune's ``TrialPlateauStopper``
and two hindsight oracles (``oracle_best``, ``oracle@1%``); see ``_rules``.

Usage (from the repository root)::

    python -m benchmarks.stopping                       # full run, all sources
    python -m benchmarks.stopping --max-runs-per-task 30 --sources taskset
    python -m benchmarks.stopping --split tune --advisor-kwargs '{"some_setting": 3}'
    python -m benchmarks.stopping --sources taskset --with-lr --out DIR   # TaskSet's lr logged
    python -m benchmarks.stopping --selfcheck
"""

from __future__ import annotations

import os

# Two worker processes on two cores, tiny arrays: keep BLAS single-threaded (before numpy loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import datetime as dt
import hashlib
import inspect
import json
import math
import multiprocessing as mp
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # allow ``python benchmarks/stopping.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks._curves import (  # noqa: E402
    CACHE_DIR,
    DATA_DIR,
    Monitor,
    Run,
    family,
    load_source,
    monitors_for,
    sample_runs,
    task_split,
    taskset_learning_rates,
)
from benchmarks._rules import (  # noqa: E402
    ANCHOR_NAMES,
    anchor_rules,
    kept_best,
    oracle_best_index,
    oracle_within_index,
    relative_regret,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ("advisor", *ANCHOR_NAMES, "oracle_best", "oracle@1%")
HARMFUL = 0.01
DEFAULT_TASKSET_NONLEARNERS = 150
TASK_TABLE_RULES = ("advisor", "es_p5", "es_p10", "es_p20", "GL5", "PQ3", "UP3", "plateau",
                    "oracle@1%")

# --------------------------------------------------------------------------------------------
# Replay (runs in worker processes)

_JOBS: list[tuple[Run, Monitor]] = []
_LEARNING_RATES: dict[str, np.ndarray] = {}  # --with-lr: TaskSet's rebuilt rates by run_id
_ADVISOR: Any = None
_ADVISOR_KWARGS: dict[str, Any] = {}


def _try_import_advisor() -> tuple[Any, str | None]:
    try:
        from advisor import Advisor
    except Exception as exc:  # the core package may not exist yet
        return None, f"{type(exc).__name__}: {exc}"
    return Advisor, None


def _init_worker(use_advisor: bool, advisor_kwargs: dict[str, Any]) -> None:
    global _ADVISOR, _ADVISOR_KWARGS
    _ADVISOR = _try_import_advisor()[0] if use_advisor else None
    _ADVISOR_KWARGS = advisor_kwargs


def _num(x: float) -> float | int:
    return int(x) if math.isfinite(x) and float(x).is_integer() else float(x)


def replay(run: Run, mon: Monitor) -> dict[str, Any]:
    """Replay one run's curve for one monitor through every rule; return stops and regrets."""
    val = run.metrics[mon.metric]
    train = run.metrics.get(mon.train_metric, np.full(run.n_evals, np.nan))
    lr = _LEARNING_RATES.get(run.run_id) if run.source == "taskset" else None
    n = run.n_evals
    online: dict[str, Any] = anchor_rules(mon.metric, mon.mode, mon.error_scale)
    stops: dict[str, int] = {}
    adv = None
    out: dict[str, Any] = {"adv_verdict": "", "adv_reason": "", "adv_ns": 0, "adv_calls": 0,
                           "adv_error": ""}
    if _ADVISOR is not None:
        try:
            adv = _ADVISOR(monitor=mon.metric, mode=mon.mode, train_metric=mon.train_metric,
                           max_steps=_num(run.x[-1]), **_ADVISOR_KWARGS)
        except Exception as exc:
            out["adv_error"] = f"init: {type(exc).__name__}: {exc}"
            stops["advisor"] = n
    needed = len(online) + (_ADVISOR is not None)
    for i in range(n):
        step, v, t = float(run.x[i]), float(val[i]), float(train[i])
        for name in [k for k in online if k not in stops]:
            if online[name].update(step, v, t):
                stops[name] = i + 1
        if adv is not None and "advisor" not in stops:
            t0 = time.perf_counter_ns()
            try:
                logged = {mon.metric: v, mon.train_metric: t}
                if lr is not None:
                    logged["lr"] = float(lr[i])
                advice = adv.update(_num(step), logged)
            except Exception as exc:
                out["adv_error"] = f"update: {type(exc).__name__}: {exc}"
                stops["advisor"] = n
                continue
            finally:
                out["adv_ns"] += time.perf_counter_ns() - t0
                out["adv_calls"] += 1
            if advice.should_stop:
                stops["advisor"] = i + 1
                out["adv_verdict"] = getattr(advice.verdict, "value", str(advice.verdict))
                out["adv_reason"] = str(advice.reason)
        if len(stops) == needed:
            break
    for name in [*online, *(["advisor"] if _ADVISOR is not None else [])]:
        stops.setdefault(name, n)
    stops["oracle_best"] = oracle_best_index(val, mon.mode)
    stops["oracle@1%"] = oracle_within_index(val, mon.mode, HARMFUL)
    finite = val[np.isfinite(val)]
    best = float(finite.min() if mon.mode == "min" else finite.max())
    out["rules"] = {
        name: (s, relative_regret(kept_best(val, s, mon.mode), best, mon.mode))
        for name, s in stops.items()
    }
    return out


def _replay_job(i: int) -> tuple[int, dict[str, Any]]:
    run, mon = _JOBS[i]
    return i, replay(run, mon)


# --------------------------------------------------------------------------------------------
# Aggregation


def _wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * x) / np.sum(w)) if len(x) else math.nan


def _wquantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    if not len(x):
        return math.nan
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, q * cw[-1])])


def summarize(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per rule: n runs, weighted mean saved, regret mean / p90, harmful share, and ratios."""
    out: dict[str, dict[str, float]] = {}
    for rule, g in df.groupby("rule", sort=False):
        w, reg = g["weight"].to_numpy(), g["regret"].to_numpy()
        out[str(rule)] = {
            "n": len(g),
            "saved": _wmean(g["saved"].to_numpy(), w),
            "regret_mean": _wmean(reg, w),
            "regret_p90": _wquantile(reg, w, 0.9),
            "harmful": _wmean((reg > HARMFUL).astype(float), w),
        }
    es10, es20, orc = (out.get(k, {}) for k in ("es_p10", "es_p20", "oracle@1%"))
    for s in out.values():
        s["saved_vs_es10"] = _ratio(s["saved"], es10.get("saved"))
        s["regret_vs_es20"] = _ratio(s["regret_mean"], es20.get("regret_mean"))
        s["harmful_vs_es20"] = _ratio(s["harmful"], es20.get("harmful"))
        s["recovery"] = _ratio(s["saved"], orc.get("saved"))
    return dict(sorted(out.items(), key=lambda kv: RULES.index(kv[0])))


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return math.nan
    return a / b if b else (math.inf if a else math.nan)


def scopes(df: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(source/kind label, group, split, rows) for the pooled groups, per split and overall."""
    out = []
    for (source, kind), g in df.groupby(["source", "kind"], sort=True):
        label = source if source == "taskset" else f"{source}/{kind}"
        groups = [("all", g)]
        if source == "taskset":
            groups = [("learners", g[g.learner == True]),  # noqa: E712
                      ("non-learners", g[g.learner == False]), ("all", g)]  # noqa: E712
        for split in ("holdout", "tune", "all"):
            for name, gg in groups:
                sub = gg if split == "all" else gg[gg.split == split]
                if len(sub):
                    out.append((label, name, split, sub))
    return out


# --------------------------------------------------------------------------------------------
# Report


def _fmt(x: Any, pct: bool = False, digits: int = 1) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int):
        return str(x)
    if math.isinf(x):
        return "inf"
    return f"{100 * x:.{digits}f}" if pct else f"{x:.2f}"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], md: bool) -> str:
    if md:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(
        zip(headers, widths, strict=True)))
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(
        zip(r, widths, strict=True))) for r in rows]
    return "\n".join([line, "-" * len(line), *body])


RULE_HEADERS = ["rule", "n", "saved%", "regret%", "p90%", "harmful%", "saved/es10",
                "regret/es20", "harm/es20", "saved/or@1%"]


def rule_table(summary: dict[str, dict[str, float]], md: bool) -> str:
    rows = [[rule, str(s["n"]), _fmt(s["saved"], True), _fmt(s["regret_mean"], True, 2),
             _fmt(s["regret_p90"], True, 2), _fmt(s["harmful"], True), _fmt(s["saved_vs_es10"]),
             _fmt(s["regret_vs_es20"]), _fmt(s["harmful_vs_es20"]), _fmt(s["recovery"])]
            for rule, s in summary.items()]
    return render(RULE_HEADERS, rows, md)


def task_table(df: pd.DataFrame, md: bool) -> str:
    rules = [r for r in TASK_TABLE_RULES if r in set(df.rule)]
    rows = []
    for (task, split), g in df.groupby(["task", "split"], sort=True):
        s = summarize(g)
        n = str(s[rules[0]]["n"]) if rules else "0"
        cells = [f"{_fmt(s[r]['saved'], True)}/{_fmt(s[r]['regret_mean'], True, 2)}/"
                 f"{_fmt(s[r]['harmful'], True)}" for r in rules]
        rows.append([task.removeprefix("FixedTextRNNClassification_imdb_"), split, n, *cells])
    return render(["task", "split", "n", *rules], rows, md)


def targets(summary_by_scope: dict[tuple[str, str], dict]) -> list[dict[str, Any]]:
    """(a) advisor saves >= es_p10 with mean regret and harmful share <= es_p20;
    (b) advisor recovers >= 70% of oracle@1% savings."""
    out = []
    for (label, group), s in summary_by_scope.items():
        if "advisor" not in s:
            continue
        a, e10, e20, o = s["advisor"], s["es_p10"], s["es_p20"], s["oracle@1%"]
        ok_a = (a["saved"] >= e10["saved"] and a["regret_mean"] <= e20["regret_mean"]
                and a["harmful"] <= e20["harmful"])
        out.append({"scope": f"{label} {group}", "target": "a", "pass": bool(ok_a), "detail": (
            f"saved {100 * a['saved']:.1f}% vs es_p10 {100 * e10['saved']:.1f}%; "
            f"regret {100 * a['regret_mean']:.2f}% vs es_p20 {100 * e20['regret_mean']:.2f}%; "
            f"harmful {100 * a['harmful']:.1f}% vs es_p20 {100 * e20['harmful']:.1f}%")})
        rec = a["recovery"]
        out.append({"scope": f"{label} {group}", "target": "b",
                    "pass": bool(math.isfinite(rec) and rec >= 0.7), "detail": (
            f"recovery {rec:.2f} = saved {100 * a['saved']:.1f}% / "
            f"oracle@1% {100 * o['saved']:.1f}% (need >= 0.70)")})
    return out


def verdict_table(df: pd.DataFrame, md: bool) -> str:
    adv = df[df.rule == "advisor"].copy()
    adv["verdict"] = adv["adv_verdict"].replace("", "(no stop)")
    rows = []
    for (label, verdict), g in adv.groupby(["label", "verdict"], sort=True):
        reg = g["regret"].to_numpy()
        rows.append([label, verdict, str(len(g)), _fmt(g["saved"].mean(), True),
                     _fmt(reg.mean(), True, 2), _fmt(float((reg > HARMFUL).mean()), True)])
    return render(["source", "verdict at stop", "runs", "saved%", "regret%", "harmful%"], rows,
                  md)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    return x


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return None
    return res.stdout.strip() or None


# --------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="taskset,algoperf", help="comma-separated sources")
    p.add_argument("--tasks", default="", help="comma-separated substrings; keep matching tasks")
    p.add_argument("--split", choices=("tune", "holdout", "all"), default="all",
                   help="replay only the tune or holdout tasks (default: all; report both)")
    p.add_argument("--monitor", choices=("loss", "workload", "both"), default="both",
                   help="algoperf monitors: val_loss, the workload metric, or both")
    p.add_argument("--max-runs-per-task", type=int, default=None,
                   help="per-task sample cap (taskset: non-learners only, all learners kept); "
                        f"default: {DEFAULT_TASKSET_NONLEARNERS} taskset non-learners, all "
                        "algoperf runs; -1 keeps everything")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--advisor-kwargs", default="{}", help="JSON object passed to Advisor(...)")
    p.add_argument("--no-advisor", action="store_true", help="skip the advisor rule")
    p.add_argument("--with-lr", action="store_true",
                   help="log TaskSet's learning rate beside its curves (rebuilt from its configs, "
                        "as LearningRateMonitor would log it) so the advisor can read the schedule")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--runs-csv", type=Path,
                   default=ROOT / "benchmarks" / ".cache" / "stopping_runs.csv.gz",
                   help="per-run stops and regrets (for digging into failures)")
    p.add_argument("--fresh", action="store_true",
                   help="ignore and do not write the store of finished replays (benchmarks/.cache/"
                        "replays/), which otherwise lets a killed or repeated run resume")
    p.add_argument("--store", type=Path, default=None,
                   help="use this file of finished replays whatever its key (e.g. to re-render a "
                        "report after the advisor's source changed; you vouch it still fits)")
    p.add_argument("--selfcheck", action="store_true", help="check the anchors and exit")
    return p.parse_args(argv)


def build_jobs(args: argparse.Namespace) -> tuple[list[tuple[Run, Monitor]], dict, dict, dict]:
    """Load, split, filter and sample; return jobs, weights, split table and sample sizes."""
    jobs: list[tuple[Run, Monitor]] = []
    weights: dict[tuple[str, str, str], float] = {}
    splits: dict[str, dict[str, str]] = {}
    sizes: dict[str, dict[str, Any]] = {}
    wanted = [t for t in args.tasks.split(",") if t]
    for source in [s for s in args.sources.split(",") if s]:
        runs = load_source(source, args.data)
        split = task_split(source, {r.task for r in runs})
        splits[source] = split
        runs = [r for r in runs if (not wanted or any(w in r.task for w in wanted))
                and (args.split == "all" or split[r.task] == args.split)]
        cap = args.max_runs_per_task
        if cap is None:
            cap = DEFAULT_TASKSET_NONLEARNERS if source == "taskset" else -1
        kept, strata = sample_runs(runs, None if cap < 0 else cap, args.seed)
        for (task, learner), (k, total) in strata.items():
            sizes.setdefault(source, {}).setdefault(task, {})[
                {True: "learners", False: "non_learners", None: "runs"}[learner]] = [k, total]
        for r in kept:
            k, total = strata[(r.task, r.learner)]
            weights[(source, r.task, r.run_id)] = total / k
            jobs.extend((r, m) for m in monitors_for(r, args.monitor))
    return jobs, weights, splits, sizes


def store_path(cache_dir: Path, use_advisor: bool, advisor_kwargs: dict[str, Any]) -> Path:
    """Where finished replays are appended, keyed by everything that changes their result: the
    anchors and loader (``_rules``, ``_curves``), :func:`replay`, the advisor's source files and
    its kwargs. A killed or repeated run resumes from it."""
    h = hashlib.sha1()
    files = [Path(__file__).with_name("_rules.py"), Path(__file__).with_name("_curves.py")]
    if use_advisor:
        import advisor

        files += sorted(Path(advisor.__file__).parent.rglob("*.py"))
    for f in files:
        h.update(f.read_bytes())
    h.update(inspect.getsource(replay).encode())
    h.update(json.dumps([use_advisor, advisor_kwargs], sort_keys=True).encode())
    return cache_dir / "replays" / f"{h.hexdigest()[:16]}.jsonl"


def _job_key(run: Run, mon: Monitor) -> str:
    return f"{run.source}|{run.task}|{run.run_id}|{mon.metric}"


def run_jobs(jobs: list[tuple[Run, Monitor]], workers: int, use_advisor: bool,
             advisor_kwargs: dict[str, Any], store: Path | None) -> tuple[list[dict], int]:
    """Replay every job (long runs first) on ``workers`` processes; return results and how many
    came from ``store`` (finished replays of an earlier, identical run)."""
    global _JOBS
    _JOBS = jobs
    done_before: dict[str, dict] = {}
    if store is not None and store.exists():
        for line in store.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            done_before[rec["job"]] = rec["res"]
    results: list[dict[str, Any]] = [done_before.get(_job_key(*j), {}) for j in jobs]
    todo = sorted((i for i, r in enumerate(results) if not r), key=lambda i: -jobs[i][0].n_evals)
    resumed = len(jobs) - len(todo)
    if resumed:
        print(f"[stopping] {resumed} replays resumed from {store}", file=sys.stderr)
    t0, last = time.time(), 0.0
    if workers <= 1:
        _init_worker(use_advisor, advisor_kwargs)
        it = map(_replay_job, todo)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers, _init_worker, (use_advisor, advisor_kwargs))
        it = pool.imap_unordered(_replay_job, todo, chunksize=2)
    fh = None
    if store is not None:
        store.parent.mkdir(parents=True, exist_ok=True)
        fh = store.open("a")
    try:
        for done, (i, res) in enumerate(it, 1):
            results[i] = res
            if fh is not None:
                fh.write(json.dumps({"job": _job_key(*jobs[i]), "res": res}) + "\n")
                fh.flush()
            now = time.time()
            if now - last > 10 or done == len(todo):
                el = now - t0
                print(f"[stopping] {done}/{len(todo)} replays, {el:.0f}s elapsed, "
                      f"~{el / done * (len(todo) - done):.0f}s left", file=sys.stderr, flush=True)
                last = now
    finally:
        if fh is not None:
            fh.close()
        if pool is not None:
            pool.close()
            pool.join()
    return results, resumed


def to_frame(jobs: list[tuple[Run, Monitor]], results: list[dict[str, Any]], weights: dict,
             splits: dict) -> pd.DataFrame:
    rows = []
    for (run, mon), res in zip(jobs, results, strict=True):
        base = {"source": run.source, "kind": mon.kind, "metric": mon.metric, "mode": mon.mode,
                "task": run.task, "family": family(run.task) if run.source != "taskset" else "",
                "split": splits[run.source][run.task], "learner": run.learner,
                "run_id": run.run_id, "n_evals": run.n_evals,
                "weight": weights[(run.source, run.task, run.run_id)]}
        for rule, (stop, regret) in res["rules"].items():
            row = {**base, "rule": rule, "stop": stop, "saved": (run.n_evals - stop) / run.n_evals,
                   "regret": regret}
            if rule == "advisor":
                row.update({k: res[k] for k in ("adv_verdict", "adv_reason", "adv_ns",
                                                "adv_calls", "adv_error")})
            rows.append(row)
    df = pd.DataFrame(rows)
    for col, default in (("adv_verdict", ""), ("adv_reason", ""), ("adv_ns", 0), ("adv_calls", 0),
                         ("adv_error", "")):
        df[col] = df[col].fillna(default) if col in df else default
    df["label"] = np.where(df.source == "taskset", df.source, df.source + "/" + df.kind)
    return df


def report(df: pd.DataFrame, meta: dict[str, Any], out_dir: Path) -> None:
    """Print the tables, the targets and the advisor cost; write stopping.json and stopping.md."""
    all_scopes = scopes(df)
    summaries = {(label, group, split): summarize(sub) for label, group, split, sub in all_scopes}
    head_split = "holdout" if (df.split == "holdout").any() else "tune"
    head = {(lab, grp): s for (lab, grp, spl), s in summaries.items() if spl == head_split
            and grp in ("learners", "all")}
    tgt = targets(head)
    views = [(lab, grp, sub) for lab, g in df.groupby("label") for grp, sub in (
        [("learners", g[g.learner == True]), ("all", g)] if lab == "taskset"  # noqa: E712
        else [("all", g)])]
    per_task = {f"{lab} {grp}": {t: summarize(gt) for t, gt in sub.groupby("task")}
                for lab, grp, sub in views}
    adv = df[(df.rule == "advisor")]
    cost = {lab: {"calls": int(g.adv_calls.sum()),
                  "us_per_update": float(g.adv_ns.sum() / 1e3 / max(g.adv_calls.sum(), 1))}
            for lab, g in adv.groupby("label")}
    errors = adv[adv.adv_error != ""].adv_error.value_counts().head(5).to_dict()

    md, txt = [f"# Stopping benchmark\n\n{meta['date']}, commit `{meta['git_commit']}`, "
               f"advisor: {meta['advisor']}. Columns: saved = share of evaluations saved; regret "
               "= relative regret of the kept best (restore-best); harmful = share of runs with "
               "regret > 1%; ratios against Lightning EarlyStopping patience 10 / 20 and the "
               "oracle@1%. taskset `all` is weighted back to the full population of runs.\n"], []
    for split in (head_split, "tune" if head_split == "holdout" else None):
        if split is None or not any(s == split for _, _, s, _ in all_scopes):
            continue
        title = "Headline" if split == head_split else "Secondary"
        for (label, group, spl), s in summaries.items():
            if spl != split:
                continue
            h = f"{title}: {label} {group} ({split} tasks)"
            md.append(f"## {h}\n\n{rule_table(s, True)}\n")
            txt.append(f"\n== {h}\n{rule_table(s, False)}")
    lines = [f"{'PASS' if t['pass'] else 'MISS'} ({t['target']}) {t['scope']} [{head_split}]: "
             f"{t['detail']}" for t in tgt]
    if not tgt:
        lines = ["(targets not checked: the advisor rule was not run)"]
    md.append("## Targets\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
    txt.append("\n== Targets\n" + "\n".join(lines))
    for label, group, g in views:
        h = f"Per task: {label} {group} (saved% / mean regret% / harmful%)"
        md.append(f"## {h}\n\n{task_table(g, True)}\n")
        txt.append(f"\n== {h}\n{task_table(g, False)}")
    if len(adv):
        md.append(f"## Advisor verdicts at the stop (all selected runs)\n\n"
                  f"{verdict_table(df, True)}\n")
        txt.append(f"\n== Advisor verdicts at the stop (all selected runs)\n"
                   f"{verdict_table(df, False)}")
        cost_line = "; ".join(f"{lab}: {c['us_per_update']:.0f} us x {c['calls']} updates"
                              for lab, c in cost.items())
        md.append(f"## Advisor cost\n\nMean time per `Advisor.update`: {cost_line}. "
                  f"Errors: {errors or 'none'}.\n")
        txt.append(f"\n== Advisor cost per update: {cost_line}\n   errors: {errors or 'none'}")
    md.append("## Settings\n\n```json\n" + json.dumps(_json_safe(meta), indent=1) + "\n```\n")
    print("\n".join(txt))

    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "targets": tgt, "advisor_cost": cost, "advisor_errors": errors,
               "pooled": [{"source": lab, "group": grp, "split": spl, "rules": s}
                          for (lab, grp, spl), s in summaries.items()],
               "per_task": per_task}
    (out_dir / "stopping.json").write_text(json.dumps(_json_safe(payload), indent=1) + "\n")
    (out_dir / "stopping.md").write_text("\n".join(md))
    print(f"\nwrote {out_dir / 'stopping.json'} and {out_dir / 'stopping.md'}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.selfcheck:
        from benchmarks._selfcheck import main as selfcheck

        return selfcheck()
    advisor_kwargs = json.loads(args.advisor_kwargs)
    advisor_cls, why = (None, "skipped (--no-advisor)") if args.no_advisor \
        else _try_import_advisor()
    if advisor_cls is None:
        print(f"[stopping] advisor rule skipped: {why}", file=sys.stderr)
    t0 = time.time()
    jobs, weights, splits, sizes = build_jobs(args)
    if args.with_lr:
        _LEARNING_RATES.update(taskset_learning_rates(args.data))
    print(f"[stopping] {len(jobs)} replays (run x monitor) from {len(weights)} runs, "
          f"loaded in {time.time() - t0:.0f}s", file=sys.stderr)
    use_adv = advisor_cls is not None
    store = args.store or (None if args.fresh else store_path(
        CACHE_DIR, use_adv, {**advisor_kwargs, "(with lr)": True} if args.with_lr
        else advisor_kwargs))
    results, resumed = run_jobs(jobs, args.workers, use_adv, advisor_kwargs, store)
    df = to_frame(jobs, results, weights, splits)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "advisor": ("default settings" + (", TaskSet's learning rate logged" if args.with_lr
                                           else "")) if advisor_cls and not advisor_kwargs else
                   (f"kwargs {advisor_kwargs}" if advisor_cls else f"not run ({why})"),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rules": list(RULES), "harmful_threshold": HARMFUL,
        "split": {src: {s: sorted(t for t, v in sp.items() if v == s) for s in ("tune", "holdout")}
                  for src, sp in splits.items()},
        "sample_sizes": sizes, "replays": len(jobs), "resumed_replays": resumed,
        "wall_s": round(time.time() - t0, 1),
    }
    report(df, meta, args.out)
    if args.runs_csv:
        args.runs_csv.parent.mkdir(parents=True, exist_ok=True)
        df.drop(columns=["label"]).to_csv(args.runs_csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
