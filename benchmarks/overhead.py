"""Overhead benchmark: what the advisor's Lightning callback costs a real (small) training run.

The same Lightning model is trained with (a) no callback, (b) Lightning's ``EarlyStopping``
(patience so large it never stops) and (c) ``AdvisorCallback(action="advise")``, every run with an
``MLFlowLogger`` to a sqlite store in a temporary directory. Runs are interleaved (a, b, c, a, b,
c, ...) after one short unmeasured warm-up run of each, so drifts in machine load hit every
configuration alike. We report the median wall time of ``trainer.fit`` per configuration, the
ratios (c)/(b) and (b)/(a), and the cost of the advisor per validation check, timed inside the
callback: its ``on_validation_end`` and ``on_train_epoch_end`` hooks (the check runs at the end
of the epoch when validation runs once per epoch), ``Advisor.update`` within them, and the MLflow
submission (tags, markdown, queueing; the writes themselves happen in a background thread), plus
``on_fit_end`` (the final artifacts and the wait for the writer to flush).

Target: (c)/(b) <= 1.03, printed as PASS or MISS.

Torch runs with one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``) for stable
timings; the model is deliberately small (an MLP on synthetic 64-feature data), so the fixed
per-check cost of the advisor is a larger share of the run than it would be for a real model.

Usage (from the repository root)::

    python -m benchmarks.overhead                        # 5 repeats x 20 epochs x 100 steps
    python -m benchmarks.overhead --repeats 7 --epochs 30
    python -m benchmarks.overhead --repeats 1 --epochs 3  # smoke run

Writes ``benchmarks/results/overhead.json`` and ``overhead.md`` (``--out`` to change).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime as dt
import gc
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if __package__ in (None, ""):  # allow ``python benchmarks/overhead.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from advisor import AdvisorCallback  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("none", "early_stopping", "advisor")
TARGET = 1.03


# ---------------------------------------------------------------------------- the model
class MLP(pl.LightningModule):
    def __init__(self, hidden: int = 256, lr: float = 1e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 10))
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def make_data(steps_per_epoch: int, batch_size: int, seed: int = 0):
    """Noisy Gaussian classes: a curve that keeps moving for a while, then levels off."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 64, generator=g) * 0.35
    n_train, n_val = steps_per_epoch * batch_size, 10 * batch_size

    def sample(n: int) -> TensorDataset:
        y = torch.randint(0, 10, (n,), generator=g)
        return TensorDataset(centers[y] + torch.randn(n, 64, generator=g), y)

    train, val = sample(n_train), sample(n_val)
    return (DataLoader(train, batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(val, batch_size=batch_size))


# ---------------------------------------------------------------------------- timing the hook
class TimedAdvisorCallback(AdvisorCallback):
    """AdvisorCallback that records the time spent in its hooks (perf_counter, seconds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_s: list[float] = []
        self.update_s: list[float] = []
        self.submit_s: list[float] = []
        self.setup_s = 0.0
        self.fit_end_s = 0.0
        self.writer_s = 0.0
        self.writer_cpu_s = 0.0
        self._check_s, self._checks = 0.0, 0

    def setup(self, trainer, pl_module, stage):
        t0 = time.perf_counter()
        super().setup(trainer, pl_module, stage)
        self.setup_s = time.perf_counter() - t0
        if self.advisor is not None:
            update = self.advisor.update

            def timed_update(*a: Any, **k: Any):
                t = time.perf_counter()
                try:
                    return update(*a, **k)
                finally:
                    self.update_s.append(time.perf_counter() - t)

            self.advisor.update = timed_update
        writer = self._writer
        if writer is not None:  # the background thread's MLflow writes: wall and its CPU time
            write = writer._write_pending

            def timed_write() -> None:
                t, c = time.perf_counter(), time.thread_time()
                try:
                    write()
                finally:
                    self.writer_s += time.perf_counter() - t
                    self.writer_cpu_s += time.thread_time() - c

            writer._write_pending = timed_write

    # A check may run in on_validation_end or be deferred to on_train_epoch_end (validation
    # once per epoch): the time of both hooks is one check's cost.
    def on_validation_end(self, trainer, pl_module):
        t0 = time.perf_counter()
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._check_s += time.perf_counter() - t0
            self._checks += 1

    def on_train_epoch_end(self, trainer, pl_module):
        t0 = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        self._check_s += time.perf_counter() - t0
        if self._checks:
            self.hook_s.append(self._check_s)
        self._check_s, self._checks = 0.0, 0

    def _log(self, trainer, metrics, advice):
        t0 = time.perf_counter()
        super()._log(trainer, metrics, advice)
        self.submit_s.append(time.perf_counter() - t0)

    def on_fit_end(self, trainer, pl_module):
        t0 = time.perf_counter()
        super().on_fit_end(trainer, pl_module)
        self.fit_end_s = time.perf_counter() - t0


class TimedMLFlowLogger(MLFlowLogger):
    """MLFlowLogger that records the time its synchronous metric writes take (main thread):
    the advisor's writer thread writes to the same store and may hold its lock meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_metrics_s = 0.0

    def log_metrics(self, metrics, step=None):
        t0 = time.perf_counter()
        try:
            return super().log_metrics(metrics, step)
        finally:
            self.log_metrics_s += time.perf_counter() - t0


def run_once(config: str, args: argparse.Namespace, tracking_uri: str, tag: str
             ) -> dict[str, Any]:
    pl.seed_everything(0, verbose=False)
    train, val = make_data(args.steps_per_epoch, args.batch_size)
    callbacks: list[Any] = []
    advisor = None
    if config == "early_stopping":
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=10**9))
    elif config == "advisor":
        advisor = TimedAdvisorCallback(monitor="val_loss", mode="min", train_metric="train_loss",
                                       action="advise")
        callbacks.append(advisor)
    logger = TimedMLFlowLogger(experiment_name="overhead", tracking_uri=tracking_uri,
                          run_name=f"{config}-{tag}")
    trainer = pl.Trainer(max_epochs=args.epochs, callbacks=callbacks, logger=logger,
                         accelerator="cpu", devices=1, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, log_every_n_steps=50)
    model = MLP()
    gc.collect()
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(model, train, val)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out: dict[str, Any] = {"config": config, "wall_s": wall, "cpu_s": cpu,
                           "loadavg_1min": round(load, 2), "epochs": trainer.current_epoch,
                           "logger_log_metrics_s": logger.log_metrics_s,
                           "global_step": trainer.global_step}
    if advisor is not None:
        if len(advisor.hook_s) != args.epochs or advisor.advice is None:
            raise RuntimeError(f"the advisor ran {len(advisor.hook_s)} checks, not {args.epochs}"
                               f" (warnings: {advisor._warned})")
        out.update(hook_s=advisor.hook_s, update_s=advisor.update_s, submit_s=advisor.submit_s,
                   setup_s=advisor.setup_s, fit_end_s=advisor.fit_end_s,
                   writer_s=advisor.writer_s, writer_cpu_s=advisor.writer_cpu_s,
                   verdict=advisor.advice.verdict.value)
    return out


# ---------------------------------------------------------------------------- report
def _ms(x: float) -> str:
    return f"{1000 * x:.2f}"


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    walls = {c: [r["wall_s"] for r in runs if r["config"] == c] for c in CONFIGS}
    cpus = {c: [r["cpu_s"] for r in runs if r["config"] == c] for c in CONFIGS}
    med = {c: statistics.median(w) for c, w in walls.items()}
    med_cpu = {c: statistics.median(w) for c, w in cpus.items()}
    paired = [c / b for b, c in zip(walls["early_stopping"], walls["advisor"], strict=True)]
    adv = [r for r in runs if r["config"] == "advisor"]
    hooks = [h for r in adv for h in r["hook_s"]]
    updates = [u for r in adv for u in r["update_s"]]
    submits = [s for r in adv for s in r["submit_s"]]
    fit_ends = [r["fit_end_s"] for r in adv]
    ratio_cb = med["advisor"] / med["early_stopping"]
    ratio_ba = med["early_stopping"] / med["none"]
    epoch_s = med["none"] / args.epochs
    per_check = {
        "hook_median_ms": 1000 * statistics.median(hooks),
        "hook_p90_ms": 1000 * sorted(hooks)[int(0.9 * (len(hooks) - 1))],
        "hook_max_ms": 1000 * max(hooks),
        "update_median_ms": 1000 * statistics.median(updates),
        "update_max_ms": 1000 * max(updates),
        "mlflow_submit_median_ms": 1000 * statistics.median(submits),
        "fit_end_median_ms": 1000 * statistics.median(fit_ends),
        "writer_wall_per_check_ms": 1000 * statistics.median(
            [r["writer_s"] / len(r["hook_s"]) for r in adv]),
        "writer_cpu_per_check_ms": 1000 * statistics.median(
            [r["writer_cpu_s"] / len(r["hook_s"]) for r in adv]),
        "hook_share_of_epoch": statistics.median(hooks) / epoch_s,
        "hook_total_share_of_run": statistics.median(
            [sum(r["hook_s"]) / r["wall_s"] for r in adv]),
    }
    # how the per-check cost moves with the length of the history
    by_check = [statistics.median(r["hook_s"][i] for r in adv) for i in range(args.epochs)]
    return {
        "median_wall_s": med,
        "min_wall_s": {c: min(w) for c, w in walls.items()},
        "max_wall_s": {c: max(w) for c, w in walls.items()},
        "ratio_advisor_over_early_stopping": ratio_cb,
        "ratio_early_stopping_over_none": ratio_ba,
        "median_cpu_s": med_cpu,
        "median_logger_log_metrics_s": {c: statistics.median(
            r["logger_log_metrics_s"] for r in runs if r["config"] == c) for c in CONFIGS},
        "cpu_ratio_advisor_over_early_stopping": med_cpu["advisor"] / med_cpu["early_stopping"],
        "cpu_ratio_early_stopping_over_none": med_cpu["early_stopping"] / med_cpu["none"],
        "paired_wall_ratio_advisor_over_early_stopping_median": statistics.median(paired),
        "target": TARGET,
        "status": "PASS" if ratio_cb <= TARGET else "MISS",
        "per_check": per_check,
        "hook_ms_by_check": [1000 * x for x in by_check],
        "median_epoch_s_without_callback": epoch_s,
        "advisor_verdicts": sorted({r["verdict"] for r in adv}),
    }


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    med, lo, hi = summary["median_wall_s"], summary["min_wall_s"], summary["max_wall_s"]
    pc = summary["per_check"]
    a = meta["args"]
    lines = [
        "# Advisor callback overhead",
        "",
        f"{a['epochs']} epochs x {a['steps_per_epoch']} training steps (batch {a['batch_size']},"
        f" 10 validation batches) per run, {a['repeats']} interleaved repeats per configuration "
        f"after a short warm-up of each; MLFlowLogger to sqlite; torch {meta['torch']} with "
        f"{meta['torch_threads']} thread, Lightning {meta['lightning']}, MLflow {meta['mlflow']};"
        f" {meta['cpu_count']} CPUs, load average {meta['loadavg_start']} at start.",
        "",
        "| configuration | median wall (s) | min | max |",
        "|---|---:|---:|---:|",
    ]
    names = {"none": "(a) no callback", "early_stopping": "(b) EarlyStopping",
             "advisor": "(c) AdvisorCallback(advise)"}
    for c in CONFIGS:
        lines.append(f"| {names[c]} | {med[c]:.3f} | {lo[c]:.3f} | {hi[c]:.3f} |")
    cpu = summary["median_cpu_s"]
    lines[-len(CONFIGS):] = [
        line + f" {cpu[c]:.3f} |" for line, c in zip(lines[-len(CONFIGS):], CONFIGS, strict=True)]
    lines[-len(CONFIGS) - 2:-len(CONFIGS)] = [
        "| configuration | median wall (s) | min | max | median process CPU (s) |",
        "|---|---:|---:|---:|---:|"]
    lines += [
        "",
        "| ratio | wall (medians) | process CPU (medians) |",
        "|---|---:|---:|",
        f"| (c)/(b) | {summary['ratio_advisor_over_early_stopping']:.4f} "
        f"(target <= {TARGET}: **{summary['status']}**) | "
        f"{summary['cpu_ratio_advisor_over_early_stopping']:.4f} |",
        f"| (b)/(a) | {summary['ratio_early_stopping_over_none']:.4f} | "
        f"{summary['cpu_ratio_early_stopping_over_none']:.4f} |",
        "",
        f"Median of the per-repeat wall ratios (c)/(b): "
        f"{summary['paired_wall_ratio_advisor_over_early_stopping_median']:.4f}. Time in "
        f"MLFlowLogger.log_metrics per run (main thread, median, s): " + ", ".join(
            f"({k}) {summary['median_logger_log_metrics_s'][c]:.3f}"
            for k, c in zip("abc", CONFIGS, strict=True)) + ".",
        "",
        "| advisor cost per validation check | ms |",
        "|---|---:|",
        f"| callback hooks per check, median | {pc['hook_median_ms']:.2f} |",
        f"| callback hooks per check, p90 / max | {pc['hook_p90_ms']:.2f} / "
        f"{pc['hook_max_ms']:.2f} |",
        f"| of which Advisor.update, median / max | {pc['update_median_ms']:.2f} / "
        f"{pc['update_max_ms']:.2f} |",
        f"| of which MLflow submission (queue only), median | "
        f"{pc['mlflow_submit_median_ms']:.2f} |",
        f"| on_fit_end (artifacts, flush), median per run | {pc['fit_end_median_ms']:.2f} |",
        f"| background MLflow writer thread per check, wall / CPU | "
        f"{pc['writer_wall_per_check_ms']:.2f} / {pc['writer_cpu_per_check_ms']:.2f} |",
        "",
        f"Hook median = {100 * pc['hook_share_of_epoch']:.2f}% of a median epoch without callback "
        f"({summary['median_epoch_s_without_callback']:.3f} s); all hooks of a run = "
        f"{100 * pc['hook_total_share_of_run']:.2f}% of its wall time. Median hook time by check "
        f"(ms): " + ", ".join(f"{x:.1f}" for x in summary["hook_ms_by_check"]) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1 or args.steps_per_epoch < 1:
        parser.error("--repeats, --epochs and --steps-per-epoch must be positive.")

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*noload.*")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)

    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "lightning": pl.__version__, "mlflow": mlflow.__version__,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="advisor-overhead-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        warmup = argparse.Namespace(**{**vars(args), "epochs": min(args.epochs, 2)})
        for config in CONFIGS:  # warm-up: imports, the sqlite schema, first-call costs
            run_once(config, warmup, uri, "warmup")
        for repeat in range(args.repeats):
            for config in CONFIGS:
                result = run_once(config, args, uri, str(repeat))
                result["repeat"] = repeat
                runs.append(result)
                print(f"  repeat {repeat} {config:>14}: {result['wall_s']:.3f} s", flush=True)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["total_s"] = time.perf_counter() - started
    summary = summarize(runs, args)
    text = render(summary, meta)
    print()
    print(text)
    print(f"(c)/(b) = {summary['ratio_advisor_over_early_stopping']:.4f}: {summary['status']} "
          f"(target <= {TARGET}); total {meta['total_s']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    (args.out / "overhead.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
