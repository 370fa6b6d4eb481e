"""Stopping benchmark on the zoo (``benchmarks/zoo.py``): the project's own real training runs,
replayed as the Lightning callback runs the advisor, against Lightning's ``EarlyStopping``.

Configuration users run (``--config callback``, the default): the advisor sees, at every
validation epoch, the monitored metric, the matching training metric, the learning rate the epoch
trained with, the run's budget (``max_epochs``) and the learning-rate plan the callback reads from
the trainer: the ``planned_lr`` of every epoch (what the scheduler would give, computed before
training), or for ``ReduceLROnPlateau`` its rule (factor and patience, from the run's config).
``--config logged`` drops the plan (a replay of runs logged without it: the logged rate only).

Monitors: ``val_loss`` (min, with ``train_loss``) on every run and ``val_acc`` (max, with
``train_acc``) on classification runs. Anchors: the real ``EarlyStopping`` with patience 10 and
20 validation checks (``benchmarks/_rules.py``), and the hindsight ``oracle@1%`` (the earliest
check whose best so far is within 1% of the run's best). Restore-best semantics: a stop keeps the
best value up to it. Per run and rule: ``saved`` = share of the budget's epochs not trained,
``regret`` = relative regret of the kept value against the run's best over the whole budget,
``harmful`` = regret above 1%. ``early_decay`` counts stops before the run's last planned decay
that paid (the planned rate halved, and the best value after it beat the best before it by more
than 1%).

Results per split (tune / holdout families, see the zoo's split rule, or a fresh corpus), per
schedule family, per monitor and per data family (``data <family>``).
Targets (issue 12 and 11): on every schedule family, the advisor's harmful share is no more than
patience 20's; the advisor dominates patience 20 (harmful <=, mean regret <=, saved >=); with a
known plan it saves at least patience 10's share; no stop before the last decay that paid.
A second table places the advisor against the patience frontier (patience 30, 40 and 60 in the
same run): the most any patience in 10-60 saves with no more harm than the advisor's. A last line
says why the advisor went on where patience 20 stopped without harm (its reason at that check),
and, for "not clear yet", how far the plateau test's optimistic projection was from the
tolerance: where the savings patience 20 has and the advisor lacks come from.

Usage::

    python -m benchmarks.zoo_stopping                       # holdout, callback configuration
    python -m benchmarks.zoo_stopping --split tune --config logged
    python -m benchmarks.zoo_stopping --advisor-kwargs '{"confirm": 3}' --out /tmp/x
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import multiprocessing as mp
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks._curves import FRESH_DIRS, Run, zoo_split  # noqa: E402
from benchmarks._rules import (  # noqa: E402
    LightningEarlyStopping,
    kept_best,
    oracle_within_index,
    relative_regret,
)

PATIENCES = (10, 20, 30, 40, 60)
RULES = ("advisor", *(f"es_p{p}" for p in PATIENCES), "oracle@1%")
HARMFUL = 0.01
_STATE: dict[str, Any] = {}


def plan_of(run: Run):
    """The plan the callback would read for this run (None for ``--config logged``)."""
    from advisor import LrPlan, PlateauRule

    variant = str(run.config.get("schedule_variant", ""))
    m = re.fullmatch(r"plateau_x([0-9.]+)_p(\d+)", variant)
    if m:
        return PlateauRule(factor=float(m.group(1)), patience=int(m.group(2)))
    planned = run.per_epoch.get("planned_lr")
    if planned is None or not np.isfinite(planned).any():
        return None
    epochs = np.arange(1, planned.size + 1, dtype=float)
    ok = np.isfinite(planned)
    return LrPlan(tuple(epochs[ok]), tuple(planned[ok]), variant)


def paying_decays(run: Run, values: np.ndarray, mode: str) -> list[float]:
    """Epochs of the planned decays (the rate halved since the last one) after which the best
    value beat the best before by more than 1% (relative)."""
    planned = run.per_epoch.get("planned_lr")
    if planned is None or not np.isfinite(planned).any():
        return []
    sign = 1.0 if mode == "min" else -1.0
    y = sign * values
    decays, ref = [], None
    for e, r in enumerate(planned, start=1):
        if not np.isfinite(r):
            continue
        if ref is None or r > ref:
            ref = r  # warm-up or a restart: the reference is the highest rate since the last decay
        elif r <= 0.5 * ref:
            decays.append(float(e))
            ref = r
    paying = []
    for d in decays:
        before, after = y[(run.x < d) & np.isfinite(y)], y[(run.x >= d) & np.isfinite(y)]
        if before.size and after.size:
            b = before.min()
            if b - after.min() > HARMFUL * max(abs(b), 1e-12):
                paying.append(d)
    return paying


def check_metrics(run: Run, k: int, metric: str, train_metric: str | None) -> dict[str, float]:
    """What the callback logs at check ``k``: the monitor, and the training metric and the rate
    where they are finite."""
    logged = {metric: float(run.metrics[metric][k])}
    for name in (train_metric, "lr"):
        value = run.metrics[name][k] if name in run.metrics else math.nan
        if np.isfinite(value):
            logged[name] = float(value)
    return logged


def replay_one(job: tuple[int, str, str, str | None]) -> dict[str, Any]:
    from advisor import Advisor

    i, metric, mode, train_metric = job
    run: Run = _STATE["runs"][i]
    config, kwargs = _STATE["config"], _STATE["advisor_kwargs"]
    val = run.metrics[metric]
    train = run.metrics.get(train_metric, np.full(run.n_evals, np.nan))
    budget = float(run.config["budget"])
    plan = plan_of(run) if config == "callback" else None
    adv = Advisor(metric, mode, train_metric, max_steps=budget, lr_plan=plan, **kwargs)
    anchors = {f"es_p{p}": LightningEarlyStopping(metric, mode, p) for p in PATIENCES}
    stops: dict[str, int] = {}
    verdict = reason = waited = ""
    wait_high = wait_noise = math.nan
    t0 = time.perf_counter()
    n = int(np.flatnonzero(np.isfinite(val) | np.isfinite(train))[-1] + 1) \
        if (np.isfinite(val) | np.isfinite(train)).any() else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(n):
            v = float(val[k])
            for name, rule in anchors.items():
                if name not in stops and rule.update(run.x[k], v, float(train[k])):
                    stops[name] = k + 1
            if "advisor" not in stops:
                advice = adv.update(float(run.x[k]), check_metrics(run, k, metric, train_metric))
                if advice.should_stop:
                    stops["advisor"] = k + 1
                    verdict, reason = advice.verdict.value, advice.reason
                elif stops.get("es_p20") == k + 1:
                    waited = advice.reason  # why the advisor went on where patience 20 stopped
                    plateau = next((e for e in advice.evidence if e.detector == "plateau"),
                                   None)
                    tol = plateau.details.get("tolerance", 0) if plateau is not None else 0
                    if tol > 0:
                        wait_high = plateau.details["projected_gain_high"] / tol
                        noise = plateau.noise_scale
                        wait_noise = math.nan if noise is None else noise / tol
            if len(stops) == len(anchors) + 1:
                break
    seconds = time.perf_counter() - t0
    for name in ("advisor", *anchors):
        stops.setdefault(name, max(n, 1))
    stops["oracle@1%"] = oracle_within_index(val, mode, HARMFUL)
    finite = val[np.isfinite(val)]
    best = float(finite.min() if mode == "min" else finite.max()) if finite.size else math.nan
    paying = paying_decays(run, val, mode)
    row: dict[str, Any] = {
        "run_id": run.run_id, "family": run.config["family"], "schedule": run.config["schedule"],
        "variant": run.config["schedule_variant"], "split": run.config["split"],
        "monitor": metric, "budget": budget, "checks": n, "adv_verdict": verdict,
        "adv_reason": reason[:300], "p20_waited": wait_kind(waited),
        "p20_wait_gain_high": wait_high, "p20_wait_noise": wait_noise, "seconds": seconds,
        "last_paying_decay":
        paying[-1] if paying else math.nan}
    for name, s in stops.items():
        stop_epoch = float(run.x[min(s, run.n_evals) - 1])
        regret = relative_regret(kept_best(val, s, mode), best, mode) if finite.size else 0.0
        row[f"{name}_stop"] = stop_epoch
        row[f"{name}_saved"] = (budget - stop_epoch) / budget
        row[f"{name}_regret"] = regret
    row["advisor_early_decay"] = bool(paying and row["advisor_stop"] < paying[-1])
    return row


# the advisor's reasons to go on, by how they begin (see Advisor._word)
_WAITS = (("Not clear yet", "not clear yet"), ("Still improving", "improving"),
          ("Looks flat, to be confirmed", "unconfirmed"), ("A new phase", "new phase"),
          ("Too early", "too early"))


def wait_kind(reason: str) -> str:
    """A short name for the reason the advisor gave for going on ('' for none)."""
    if not reason:
        return ""
    for start, kind in _WAITS:
        if reason.startswith(start):
            return kind
    for part, kind in (("since its best, to be confirmed", "overfitting unconfirmed"),
                       ("by no more than twice the", "small rise, decay ahead"),
                       ("schedule is unknown", "schedule unknown"),
                       ("has not improved by more than", "not learned yet"),
                       ("forecast expects", "forecast expects more"),
                       ("raised the learning rate", "spike at a raised rate")):
        if part in reason:
            return kind
    return "decay ahead" if reason.startswith("Flat") else "other"


def waits_line(df: pd.DataFrame) -> str:
    """Why the advisor went on where patience 20 stopped without harm."""
    harmless = df[(df["es_p20_regret"] <= HARMFUL) & (df["p20_waited"] != "")]
    shares = harmless["p20_waited"].value_counts(normalize=True)
    parts = ", ".join(f"{kind} {100 * share:.0f}%" for kind, share in shares.items())
    unclear = harmless[harmless["p20_waited"] == "not clear yet"]
    return (f"where patience 20 stopped without harm and the advisor went on "
            f"({len(harmless)} replays), its reason: {parts}; when not clear yet, the optimistic "
            f"end of the plateau test's projected gain was a median "
            f"{unclear['p20_wait_gain_high'].median():.1f} times the tolerance, and the checks' "
            f"noise a median {unclear['p20_wait_noise'].median():.1f} times it")


def jobs_for(runs: list[Run]) -> list[tuple[int, str, str, str | None]]:
    jobs = []
    for i, run in enumerate(runs):
        if "val_loss" in run.metrics and np.isfinite(run.metrics["val_loss"]).any():
            jobs.append((i, "val_loss", "min", "train_loss"))
        if "val_acc" in run.metrics and np.isfinite(run.metrics["val_acc"]).any():
            jobs.append((i, "val_acc", "max", "train_acc"))
    return jobs


def _init(runs: list[Run], config: str, kwargs: dict[str, Any]) -> None:
    _STATE.update(runs=runs, config=config, advisor_kwargs=kwargs)


def summarize(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for rule in RULES:
        regret = df[f"{rule}_regret"].replace(np.inf, np.nan)
        out[rule] = {"saved": float(df[f"{rule}_saved"].mean()),
                     "mean_regret": float(regret.mean()),
                     "harmful": float((df[f"{rule}_regret"] > HARMFUL).mean())}
    out["advisor"]["early_decay"] = float(df["advisor_early_decay"].mean())
    return out


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}"


def _scopes(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [("all", df)] + [(s, g) for s, g in df.groupby("schedule", sort=True)] + \
        [(f"monitor {m}", g) for m, g in df.groupby("monitor", sort=True)] + \
        [(f"data {f}", g) for f, g in df.groupby("family", sort=True)]


def table(df: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    header = ("| scope | n | advisor saved / regret / harmful % | p10 | p20 | oracle@1% saved | "
              "stops before a paying decay | dominates p20 | harm <= p20 |")
    lines = [header, "|" + "---|" * 9]
    records = []
    for name, g in _scopes(df):
        s = summarize(g)
        a, p10, p20 = s["advisor"], s["es_p10"], s["es_p20"]
        harm_ok = a["harmful"] <= p20["harmful"]
        dominates = harm_ok and a["mean_regret"] <= p20["mean_regret"] and \
            a["saved"] >= p20["saved"]

        def cell(r: dict[str, float]) -> str:
            return f"{_pct(r['saved'])} / {_pct(r['mean_regret'])} / {_pct(r['harmful'])}"

        lines.append(f"| {name} | {len(g)} | {cell(a)} | {cell(p10)} | {cell(p20)} | "
                     f"{_pct(s['oracle@1%']['saved'])} | {_pct(a['early_decay'])} | "
                     f"{'yes' if dominates else 'no'} | {'yes' if harm_ok else 'no'} |")
        records.append({"scope": name, "n": len(g), **{k: v for k, v in s.items()},
                        "dominates_p20": dominates, "harm_le_p20": harm_ok})
    return "\n".join(lines), records


def frontier_table(df: pd.DataFrame) -> tuple[str, list[dict[str, Any]]]:
    """The advisor against the patience frontier: for each scope, the patience rules' saved /
    harmful share, and the most that any of them saves with no more harm than the advisor."""
    cols = " | ".join(f"p{p}" for p in PATIENCES[2:])
    lines = [f"| scope | advisor saved / harmful % | {cols} | most a patience saves at <= the "
             f"advisor's harm | advisor saves more |", "|" + "---|" * (len(PATIENCES) + 2)]
    records = []
    for name, g in _scopes(df):
        s = summarize(g)
        a = s["advisor"]
        within = [(s[f"es_p{p}"]["saved"], p) for p in PATIENCES
                  if s[f"es_p{p}"]["harmful"] <= a["harmful"]]
        best, best_p = max(within) if within else (math.nan, None)
        cells = " | ".join(f"{_pct(s[f'es_p{p}']['saved'])} / {_pct(s[f'es_p{p}']['harmful'])}"
                           for p in PATIENCES[2:])
        more = "yes" if best_p is None or a["saved"] >= best else "no"
        most = "none is as safe" if best_p is None else f"{_pct(best)} (p{best_p})"
        lines.append(f"| {name} | {_pct(a['saved'])} / {_pct(a['harmful'])} | {cells} | {most} | "
                     f"{more} |")
        records.append({"scope": name, "advisor": a, "patience_at_advisor_harm": best_p,
                        "patience_saved": best, "advisor_saves_more": more})
    return "\n".join(lines), records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split",
                        choices=("holdout", "tune", "all", *FRESH_DIRS),
                        default="holdout",
                        help="fresh, fresh2, fresh3: the fresh corpora (families never tuned on)")
    parser.add_argument("--config", choices=("callback", "logged"), default="callback")
    parser.add_argument("--advisor-kwargs", default="{}", type=json.loads)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-runs", type=int, default=0, help="a quick look: the first N runs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    runs = zoo_split(args.split)
    if args.max_runs:
        runs = runs[: args.max_runs]
    jobs = jobs_for(runs)
    t0 = time.time()
    if args.workers > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(args.workers, _init, (runs, args.config, args.advisor_kwargs)) as pool:
            rows = pool.map(replay_one, jobs, chunksize=8)
    else:
        _init(runs, args.config, args.advisor_kwargs)
        rows = [replay_one(j) for j in jobs]
    df = pd.DataFrame(rows)
    text, records = table(df)
    title = (f"Zoo stopping benchmark: {args.split} split, {args.config} configuration "
             f"({len(runs)} runs, {len(df)} run x monitor replays, {time.time() - t0:.0f} s)")
    front, front_records = frontier_table(df)
    print(title)
    print(text)
    print(front)
    verdicts = df.loc[df["advisor_regret"] > HARMFUL, "adv_verdict"].value_counts().to_dict()
    print(f"verdicts of the advisor's harmful stops: {verdicts}")
    waits = waits_line(df)
    print(waits)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"zoo_stopping_{args.split}_{args.config}"
    meta = {"split": args.split, "config": args.config, "advisor_kwargs": args.advisor_kwargs,
            "runs": len(runs), "replays": len(df), "harmful_verdicts": verdicts,
            "p20_harmless_waits": df.loc[(df["es_p20_regret"] <= HARMFUL)
                                         & (df["p20_waited"] != ""),
                                         "p20_waited"].value_counts().to_dict()}
    (out / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "scopes": records, "patience_frontier": front_records}, indent=2,
        default=float))
    (out / f"{stem}.md").write_text(f"# {title}\n\nsaved / mean regret / harmful, in % "
                                    f"(harmful: regret > 1%)\n\n{text}\n\nverdicts of the "
                                    f"advisor's harmful stops: {verdicts}\n\n{waits}\n\n"
                                    f"## Against the patience frontier (saved / harmful %)\n\n"
                                    f"{front}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
