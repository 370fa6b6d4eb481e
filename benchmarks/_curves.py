"""Load the real learning curves into per-run arrays; monitors, groups and the tune/holdout split.

The data (``<data>/<source>.csv.gz``, see ``<data>/README.md``) is a tidy long table with columns
``source, task, run_id, epoch, metric, value``; ``epoch`` is the 1-based index of the evaluation.
Non-finite values were dropped upstream, so missing evaluations come back here as NaN:

- ``taskset``: every run is padded to the task's full grid of 51 evaluations (TaskSet trains every
  config for 10k steps), so a diverged run shows NaN after its last finite value, as a trainer would
  have logged it. The x axis is the evaluation index.
- ``algoperf``: a run has as many evaluations as its largest ``epoch`` in any metric; the x axis is
  the ``step`` metric (real global step), falling back to the evaluation index where it is missing.

- ``zoo``: the project's own corpus (``benchmarks/data/zoo``, see ``benchmarks/zoo.py``), read
  from :data:`ZOO_DIR` unless ``data_dir`` holds a ``zoo.csv.gz``. The x axis is the epoch; a run's
  evaluations are its validation epochs (``val_every``, 2 * ``val_every``, ..., ``budget``), padded
  with NaN after a divergence, and every metric (``lr`` and ``planned_lr`` included) is given at
  those epochs. ``Run.per_epoch`` holds every metric at every epoch 1..budget (``train_loss``,
  ``lr``, ``planned_lr``, ...; NaN where not logged) and ``Run.config`` the run's config row.
  Every run has the loss, ``lr`` (and, for classification, accuracy) metrics, all NaN if it
  diverged before logging them; ``planned_lr`` is absent for ReduceLROnPlateau runs.
  Tasks are ``<family>/<schedule_variant>``; :func:`family` gives the zoo family and
  :func:`task_split` the config's ``split`` column.

The pivoted runs are cached as a pickle of plain dicts and arrays under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DATA_DIR",
    "LEARNER_THRESHOLD",
    "Monitor",
    "Run",
    "family",
    "ZOO_DIR",
    "load_source",
    "load_zoo",
    "zoo_split",
    "monitors_for",
    "sample_runs",
    "task_split",
    "taskset_learning_rates",
    "zoo_configs",
]

DATA_DIR = Path(os.environ.get("ADVISOR_CURVES", "/work/shared/curves"))
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
#: The zoo corpus (``benchmarks/zoo.py``) ships with the repository.
ZOO_DIR = Path(os.environ.get("ADVISOR_ZOO", Path(__file__).resolve().parent / "data" / "zoo"))
#: The fresh corpus (``benchmarks/zoo.py --fresh``): families the advisor was never tuned on.
FRESH_DIR = Path(__file__).resolve().parent / "data" / "zoo_fresh"
#: The second fresh corpus (``benchmarks/zoo.py --fresh2``): generated in session 11, before any
#: change of that session, to report those changes on runs nothing was chosen on.
FRESH2_DIR = Path(__file__).resolve().parent / "data" / "zoo_fresh2"
#: The third (``--fresh3``): generated in session 12, after its change, to report every rule on
#: runs none was chosen on.
FRESH3_DIR = Path(__file__).resolve().parent / "data" / "zoo_fresh3"
#: The fresh corpora by split name.
FRESH_DIRS = {"fresh": FRESH_DIR, "fresh2": FRESH2_DIR, "fresh3": FRESH3_DIR}
_CACHE_VERSION = 1

#: A TaskSet run "learns" if its minimum validation loss drops below this (chance is ln 2 = 0.693).
LEARNER_THRESHOLD = 0.6

#: AlgoPerf workload families in sorted order; a workload belongs to the longest matching prefix.
ALGOPERF_FAMILIES = (
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "ogbg",
    "wmt",
)

#: AlgoPerf workload metrics in order of priority (a workload's target metric is the first it has:
#: WMT logs accuracy and BLEU, OGBG accuracy and mAP): name -> (mode, matching train metric, scale
#: of the [0, scale] range of a max-mode metric so that ``1 - value/scale`` is an error for
#: Prechelt's rules; None for min mode). Criteo has only the loss.
WORKLOAD_METRICS: dict[str, tuple[str, str, float | None]] = {
    "val_bleu": ("max", "train_bleu", 100.0),  # AlgoPerf logs BLEU in percent
    "val_map": ("max", "train_map", 1.0),
    "val_wer": ("min", "train_wer", None),
    "val_ssim": ("max", "train_ssim", 1.0),
    "val_acc": ("max", "train_acc", 1.0),
}


@dataclass(frozen=True)
class Run:
    """One run: its x axis and every metric as arrays of length ``n_evals`` (NaN = missing)."""

    source: str
    task: str
    run_id: str
    x: np.ndarray
    metrics: dict[str, np.ndarray] = field(repr=False)
    #: zoo only: every metric at every epoch 1..budget (NaN where not logged); else empty.
    per_epoch: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: zoo only: the run's row of ``zoo_configs.csv.gz``; else empty.
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_evals(self) -> int:
        return len(self.x)

    @property
    def learner(self) -> bool | None:
        """TaskSet only: whether the run's minimum val_loss is below :data:`LEARNER_THRESHOLD`."""
        if self.source != "taskset":
            return None
        val = self.metrics.get("val_loss")
        return bool(val is not None and np.nanmin(val) < LEARNER_THRESHOLD)


@dataclass(frozen=True)
class Monitor:
    """What a stopping rule watches: a validation metric, its mode and the matching train metric.

    ``kind`` is ``"loss"`` (val_loss) or ``"workload"`` (the AlgoPerf workload metric).
    ``error_scale`` turns a max-mode metric in ``[0, error_scale]`` into an error ``1 - m/scale``
    for rules defined on positive errors (Prechelt); None for min-mode metrics (used as they are).
    """

    metric: str
    mode: str
    train_metric: str
    kind: str
    error_scale: float | None = None

    def to_error(self, values: np.ndarray) -> np.ndarray:
        """The monitored values as a quantity to minimise (Prechelt's E_va / E_tr)."""
        if self.mode == "min":
            return values
        assert self.error_scale is not None
        return 1.0 - values / self.error_scale


def family(task: str) -> str:
    """The AlgoPerf workload family: the longest known base name that prefixes ``task``; for a
    zoo task (``<family>/<schedule_variant>``) the zoo family."""
    if "/" in task:
        return task.split("/", 1)[0]
    matches = [f for f in ALGOPERF_FAMILIES if task == f or task.startswith(f + "_")]
    if matches:
        return max(matches, key=len)
    return task.removesuffix("_jax").removesuffix("_pytorch")


def task_split(source: str, tasks: Iterable[str]) -> dict[str, str]:
    """Fixed tune/holdout split of the tasks of one source.

    taskset: tasks whose index in sorted order is 0, 3, 6 or 9 are "tune", the other 8 "holdout".
    algoperf: workload families in sorted order alternate tune, holdout, tune, ... (criteo1tb,
    imagenet_resnet, librispeech_conformer, ogbg tune; fastmri, imagenet_vit,
    librispeech_deepspeech, wmt holdout); every workload goes with its family.
    zoo: the ``split`` column of ``zoo_configs.csv.gz`` (see ``benchmarks/zoo.py`` for the rule;
    it is constant within a task).
    """
    tasks = sorted(set(tasks))
    if source == "zoo":
        by_task = zoo_configs().groupby("task")["split"].agg(set)
        assert all(len(v) == 1 for v in by_task), "a zoo task spans both splits"
        return {t: next(iter(by_task[t])) for t in tasks}
    if source == "taskset":
        return {t: "tune" if i in (0, 3, 6, 9) else "holdout" for i, t in enumerate(tasks)}
    fams = sorted({family(t) for t in tasks} | set(ALGOPERF_FAMILIES))
    fam_split = {f: "tune" if i % 2 == 0 else "holdout" for i, f in enumerate(fams)}
    return {t: fam_split[family(t)] for t in tasks}


def monitors_for(run: Run, which: str = "both") -> list[Monitor]:
    """The monitors to replay for ``run``: ``which`` is ``loss``, ``workload`` or ``both``.

    TaskSet has only the loss; the workload monitor is the workload's target metric (the first of
    :data:`WORKLOAD_METRICS` it has). A monitor needs at least one finite value in the run.
    """
    out: list[Monitor] = []
    has = {k for k, v in run.metrics.items() if np.isfinite(v).any()}
    if which in ("loss", "both") and "val_loss" in has:
        out.append(Monitor("val_loss", "min", "train_loss", "loss"))
    if which in ("workload", "both") and run.source != "taskset":
        for metric, (mode, train, scale) in WORKLOAD_METRICS.items():
            if metric in has:
                out.append(Monitor(metric, mode, train, "workload", scale))
                break
    return out


def _pivot(df: pd.DataFrame, source: str) -> list[dict]:
    wide = df.pivot_table(
        index=["task", "run_id", "epoch"], columns="metric", values="value", aggfunc="first"
    )
    metric_names = [c for c in wide.columns if c not in ("step",)]
    task_max = wide.reset_index().groupby("task")["epoch"].max()
    runs: list[dict] = []
    for (task, run_id), g in wide.groupby(level=[0, 1], sort=True):
        epochs = g.index.get_level_values(2).to_numpy()
        n = int(task_max[task]) if source == "taskset" else int(epochs.max())
        pos = epochs - 1
        arrays = {}
        for m in metric_names:
            a = np.full(n, np.nan)
            a[pos] = g[m].to_numpy(dtype=float)
            arrays[m] = a
        x = np.arange(1, n + 1, dtype=float)
        if "step" in g.columns:
            step = np.full(n, np.nan)
            step[pos] = g["step"].to_numpy(dtype=float)
            x = np.where(np.isfinite(step), step, x)
        runs.append(dict(task=str(task), run_id=str(run_id), x=x, metrics=arrays))
    return runs


def _zoo_dir(data_dir: Path | None = None) -> Path:
    return Path(data_dir) if data_dir is not None and (Path(data_dir) / "zoo.csv.gz").exists() \
        else ZOO_DIR


def zoo_configs(data_dir: Path | None = None) -> pd.DataFrame:
    """The zoo's config table, one row per run (``task, run_id, family, schedule, ..., split``)."""
    return pd.read_csv(_zoo_dir(data_dir) / "zoo_configs.csv.gz")


def _pivot_zoo(df: pd.DataFrame, cfg: pd.DataFrame) -> list[dict]:
    cfg = cfg.set_index("run_id", drop=False)
    run_code = pd.Categorical(df["run_id"], categories=cfg.index).codes
    if (run_code < 0).any():
        raise ValueError("zoo.csv.gz has runs that zoo_configs.csv.gz does not list")
    metric_code, metric_names = pd.factorize(df["metric"])
    order = np.argsort(run_code, kind="stable")
    run_code, metric_code = run_code[order], metric_code[order]
    epoch = df["epoch"].to_numpy()[order] - 1
    value = df["value"].to_numpy(dtype=float)[order]
    bounds = np.searchsorted(run_code, np.arange(len(cfg) + 1))
    runs: list[dict] = []
    for i, (run_id, row) in enumerate(cfg.iterrows()):
        lo, hi = bounds[i], bounds[i + 1]
        budget, every = int(row["budget"]), int(row["val_every"])
        per_epoch = {}
        for m in np.unique(metric_code[lo:hi]):
            sel = np.flatnonzero(metric_code[lo:hi] == m) + lo
            a = np.full(budget, np.nan)
            a[epoch[sel]] = value[sel]
            per_epoch[str(metric_names[m])] = a
        expected = ["train_loss", "val_loss", "test_loss", "lr"]
        expected += ["train_acc", "val_acc", "test_acc"] if row["kind"] == "clf" else []
        for m in expected:  # a run that diverged before its first validation still has them
            per_epoch.setdefault(m, np.full(budget, np.nan))
        x = np.arange(every, budget + 1, every, dtype=float)
        idx = x.astype(int) - 1
        runs.append(dict(task=str(row["task"]), run_id=str(run_id), x=x,
                         metrics={m: a[idx] for m, a in per_epoch.items()},
                         per_epoch=per_epoch, config=row.to_dict()))
    return runs


def load_zoo(data_dir: Path | None = None, cache_dir: Path = CACHE_DIR) -> list[Run]:
    """All runs of the zoo corpus (``load_source("zoo")``); see the module docstring."""
    return load_source("zoo", ZOO_DIR if data_dir is None else data_dir, cache_dir)


def zoo_split(split: str) -> list[Run]:
    """The zoo's ``tune`` or ``holdout`` runs, both (``all``), the fresh corpus (``fresh``:
    ``data/zoo_fresh``, families generated after the advisor's defaults were frozen) or the
    second and third (``fresh2``, ``fresh3``: ``data/zoo_fresh2``, ``data/zoo_fresh3``,
    generated in sessions 11 and 12)."""
    if split in FRESH_DIRS:
        where = FRESH_DIRS[split]
        if not (where / "zoo.csv.gz").exists():
            raise FileNotFoundError(f"no {split} corpus in {where}: python -m benchmarks.zoo "
                                    f"--{split} (see its docstring)")
        return load_source("zoo", where, CACHE_DIR / split)
    return [r for r in load_zoo() if split == "all" or r.config["split"] == split]


def load_source(source: str, data_dir: Path = DATA_DIR, cache_dir: Path = CACHE_DIR) -> list[Run]:
    """All runs of ``source`` (``taskset``, ``algoperf`` or ``zoo``), pivoted once and cached."""
    if source == "zoo":
        data_dir = _zoo_dir(data_dir)
    path = Path(data_dir) / f"{source}.csv.gz"
    st = path.stat()
    key = (_CACHE_VERSION, str(path), st.st_size, int(st.st_mtime))
    if source == "zoo":
        cst = (Path(data_dir) / "zoo_configs.csv.gz").stat()
        key += (cst.st_size, int(cst.st_mtime))
    cache = Path(cache_dir) / f"{source}.pkl"
    raw = None
    if cache.exists():
        with cache.open("rb") as f:
            stored = pickle.load(f)
        if stored.get("key") == key:
            raw = stored["runs"]
    if raw is None:
        print(f"[curves] pivoting {path} (first time; cached afterwards)", file=sys.stderr)
        df = pd.read_csv(path, usecols=["task", "run_id", "epoch", "metric", "value"])
        raw = _pivot_zoo(df, zoo_configs(data_dir)) if source == "zoo" else _pivot(df, source)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump({"key": key, "runs": raw}, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache)
    return [Run(source=source, **r) for r in raw]


def sample_runs(
    runs: Sequence[Run], max_per_task: int | None, seed: int = 0
) -> tuple[list[Run], dict[tuple[str, bool | None], tuple[int, int]]]:
    """Deterministic per-task sample; returns the runs and ``{(task, learner): (kept, total)}``.

    TaskSet keeps every learner and samples up to ``max_per_task`` non-learners per task; other
    sources sample up to ``max_per_task`` runs per task. ``None`` keeps everything.
    """
    strata: dict[tuple[str, bool | None], list[Run]] = {}
    for r in runs:
        strata.setdefault((r.task, r.learner), []).append(r)
    kept: list[Run] = []
    sizes: dict[tuple[str, bool | None], tuple[int, int]] = {}
    for key in sorted(strata, key=lambda k: (k[0], str(k[1]))):
        members = strata[key]
        cap = None if key[1] is True else max_per_task
        if cap is not None and len(members) > cap:
            rng = np.random.default_rng([seed, *key[0].encode()])
            idx = np.sort(rng.choice(len(members), size=cap, replace=False))
            members = [members[i] for i in idx]
        kept.extend(members)
        sizes[key] = (len(members), len(strata[key]))
    return kept, sizes


#: TaskSet trains every configuration for 10,000 steps with 51 evenly spaced evaluations.
TASKSET_STEPS = 10_000


def taskset_learning_rates(data_dir: Path = DATA_DIR) -> dict[str, np.ndarray]:
    """The learning rate each TaskSet configuration trained with at each of its 51 evaluations.

    TaskSet's ``adam8p`` optimizer (google-research ``task_set/optimizers/adam8p.py``) decays its
    rate as ``learning_rate * exp(-exponential_decay * step) * max(1 - linear_decay * step, 0)``;
    the configurations' values are in ``taskset_configs.csv.gz`` (the same 1,000 in every task).
    Evaluation ``k`` (1-based) is taken at step ``200 * (k - 1)``: what a user's
    ``LearningRateMonitor`` would have logged beside the curve. Keyed by ``run_id``.
    """
    cfg = pd.read_csv(Path(data_dir) / "taskset_configs.csv.gz").drop_duplicates("run_id")
    steps = np.linspace(0.0, TASKSET_STEPS, 51)
    out = {}
    for row in cfg.itertuples(index=False):
        lr = (row.learning_rate * np.exp(-row.exponential_decay * steps)
              * np.maximum(1.0 - row.linear_decay * steps, 0.0))
        out[str(row.run_id)] = lr
    return out
