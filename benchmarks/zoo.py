"""The zoo: the project's own corpus of real training runs, trained here on CPU with plain torch.

Every run is a small model a user would train on a laptop, on data that ships with scikit-learn or
is generated here (no download), logged once per epoch the way a Lightning user logs it. The
corpus complements the public curves (``/work/shared/curves``): it has the learning rate the run
trained with and the rate its schedule had planned for the whole budget, every common schedule,
validation every k epochs, and classification accuracies.

Families (``family`` column; dataset x architecture):

==================  ==============  ===========  ===========================================
family              dataset         arch         task
==================  ==============  ===========  ===========================================
mlp_digits          digits          mlp          10 classes, 64 features
mlp_wine            wine            mlp          3 classes, 13 features (178 samples)
mlp_iris            iris            mlp          3 classes, 4 features (150 samples)
mlp_breast_cancer   breast_cancer   mlp          2 classes, 30 features          (holdout)
mlp_diabetes        diabetes        mlp          regression, 10 features (442 samples)
mlp_regression      make_regression mlp          regression, 20 features, noisy linear
mlp_friedman        make_friedman1  mlp          regression, Friedman #1         (holdout)
cnn_digits          digits          cnn          the 8x8 digit images, 2 conv layers
gru_ar              seq_ar          gru          next value of a noisy nonlinear AR(4)
                                                 process from the last 16 values  (holdout)
tfm_count           seq_count       transformer  most frequent of 4 symbols in 16 tokens
==================  ==============  ===========  ===========================================

Per run the sampler picks an optimizer (Adam, AdamW, SGD with momentum 0.9, RMSprop), a learning
rate from the optimizer's usual decade range (``lr_band`` mid) or one decade too low (low: still
improving at the end) or too high (high: noisy or diverging), weight decay, dropout 0-0.5, width
and depth, batch size, a training-set share (1, 0.5 or 0.2 of the training split, so that small
runs overfit), label smoothing and label noise (a share of the training labels flipped to another
class; classification only), a budget of 30-300 epochs, validation every 1 (70%), 2 or 5 epochs,
and a schedule (``schedule`` = schedule family, ``schedule_variant`` = its settings):

==============  ====================  =========================================================
schedule        variant               what (``B`` = budget in epochs, stepped per epoch unless
                                      marked per batch)
==============  ====================  =========================================================
constant        constant              no scheduler
step            step_third_x0.1       StepLR(step_size=B//3, gamma=0.1)
step            step_quarter_x0.5     StepLR(step_size=B//4, gamma=0.5)                (holdout)
multistep       multistep_50_75       MultiStepLR x0.1 at 50% and 75% of B
multistep       multistep_30_60_80    MultiStepLR x0.2 at 30%, 60% and 80% of B        (holdout)
exponential     exp_to_1pct           ExponentialLR, gamma = 0.01 ** (1/B)
exponential     exp_0.97              ExponentialLR, gamma = 0.97                      (holdout)
cosine          cosine                CosineAnnealingLR(T_max=B)
cosine          cosine_floor          CosineAnnealingLR(T_max=B, eta_min=0.05 lr)      (holdout)
warmup_cosine   warmup_cosine         LambdaLR: linear warm-up over 5% of the steps, then cosine
                                      to 0, per batch
warmup_cosine   warmup_cosine_seq     SequentialLR(LinearLR from 0.01 over B//10 epochs,
                                      CosineAnnealingLR)                               (holdout)
onecycle        onecycle              OneCycleLR(max_lr=lr), cos, pct_start 0.3, per batch
onecycle        onecycle_linear       OneCycleLR(max_lr=lr), linear, pct_start 0.2,
                                      per batch                                        (holdout)
restarts        restarts_4            CosineAnnealingWarmRestarts(T_0=B//4)
restarts        restarts_mult2        CosineAnnealingWarmRestarts(T_0=B//7, T_mult=2)  (holdout)
plateau         plateau_x0.1_p10      ReduceLROnPlateau(val_loss, factor 0.1, patience 10)
plateau         plateau_x0.5_p5       ReduceLROnPlateau(val_loss, factor 0.5, patience 5)
                                                                                       (holdout)
==============  ====================  =========================================================

ReduceLROnPlateau steps on the validation loss at validation epochs only (its patience counts
validations). The first variant of each schedule family is drawn with probability 0.65.

**Split rule** (column ``split``; deterministic, fixed here): a run is ``holdout`` if its family is
one of :data:`HOLDOUT_FAMILIES` (mlp_breast_cancer, mlp_friedman, gru_ar: whole datasets and a
whole architecture) or its schedule variant is one of :data:`HOLDOUT_VARIANTS` (the second variant
of every schedule family but constant); every other run is ``tune``. Every schedule family thus
has runs in both splits (constant through the holdout families). The split is constant within a
``task`` (``<family>/<schedule_variant>``), so ``_curves.task_split`` works per task as for the
public sources.

**Logged per epoch** (tidy long table, ``source, task, run_id, epoch, metric, value``; epoch
1-based; float32 values written with ``%.6g``; non-finite values are not written and a run whose
training loss becomes non-finite stops there, i.e. it diverged):

- every epoch: ``train_loss`` (mean over the epoch's batches, in train mode), ``train_acc``
  (classification; over the same batches), ``lr`` (the rate the epoch trained with; for per-batch
  schedules the rate at the epoch's first batch);
- validation epochs (multiples of ``val_every``): ``val_loss``, ``test_loss`` (and ``val_acc``,
  ``test_acc``), with the training criterion (label smoothing included) on clean labels;
- every epoch 1..budget, whatever happened in training: ``planned_lr``, the rate the scheduler
  would give each epoch over the whole budget, computed before training by building the same
  optimizer class with the same hyperparameters on a dummy parameter and stepping the same
  scheduler the same way (per epoch or per batch, with the same steps per epoch). Not written for
  ReduceLROnPlateau, whose future is unknown.

The config list is drawn from :data:`ZOO_SEED` (``--list`` prints it); each run is deterministic
from its ``seed`` (torch, data split, label noise, shuffling; one thread). Generate in chunks::

    python -m benchmarks.zoo --list                     # counts per family / schedule / split
    python -m benchmarks.zoo --chunk 3 --chunks 40      # -> data/zoo/chunks/chunk_03.csv.gz
    python -m benchmarks.zoo --merge                    # -> data/zoo/zoo.csv.gz, zoo_configs...

A finished chunk is skipped, so a killed generation resumes. ``--merge`` checks that every
configured run is present, writes the two files and removes the chunks.

**The fresh corpus** (``--fresh``, written to ``data/zoo_fresh``; every run in split ``fresh``):
500 runs of five families the main corpus has no run of, drawn from :data:`FRESH_SEED` with the
same sampler, generated once after the advisor's defaults were frozen (session 8) and never used
to choose a setting: an out-of-sample check as a new user's runs are.

==================  ==============  ===========  ===========================================
family              dataset         arch         task
==================  ==============  ===========  ===========================================
resmlp_moons        make_moons      resmlp       2 classes, residual MLP with BatchNorm
mlp_hastie          make_hastie     mlp          2 classes, Hastie et al. 10.2 (10 features)
linear_digits       digits          linear       logistic regression (convex)
lstm_order          seq_order       lstm         whether a sequence's largest value comes
                                                 before its smallest (12 values)
ae_digits           digits          ae           autoencoder (8-unit bottleneck): the images
                                                 are the targets (regression, no accuracy)
==================  ==============  ===========  ===========================================

Its schedules are those of the main corpus plus two it lacks (schedule family ``polynomial``):
``warmup_linear`` (``transformers``' linear warm-up over 6% of the steps, then linear decay to 0,
per batch) and ``poly2`` (``PolynomialLR(total_iters=B, power=2)``)::

    python -m benchmarks.zoo --fresh --list
    for i in $(seq 0 19); do python -m benchmarks.zoo --fresh --chunk $i --chunks 20; done
    python -m benchmarks.zoo --fresh --merge
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# where the fresh corpora live (their loader reads them)
from benchmarks._curves import FRESH2_DIR, FRESH3_DIR, FRESH_DIR

ZOO_DIR = Path(__file__).resolve().parent / "data" / "zoo"
#: Seed of the config list; changing it (or the sampler) changes the whole corpus.
ZOO_SEED = 11_2025
#: Seed of the generated datasets (make_regression, make_friedman1, the two sequence tasks),
#: which are the same data for every run; each run's split of them comes from its own seed.
DATA_SEED = 7


@dataclass(frozen=True)
class Family:
    name: str
    dataset: str
    arch: str
    kind: str  # "clf" or "reg"
    runs: int


FAMILIES: tuple[Family, ...] = (
    Family("mlp_digits", "digits", "mlp", "clf", 240),
    Family("mlp_wine", "wine", "mlp", "clf", 150),
    Family("mlp_iris", "iris", "mlp", "clf", 130),
    Family("mlp_breast_cancer", "breast_cancer", "mlp", "clf", 170),
    Family("mlp_diabetes", "diabetes", "mlp", "reg", 150),
    Family("mlp_regression", "make_regression", "mlp", "reg", 150),
    Family("mlp_friedman", "make_friedman1", "mlp", "reg", 150),
    Family("cnn_digits", "digits", "cnn", "clf", 170),
    Family("gru_ar", "seq_ar", "gru", "reg", 130),
    Family("tfm_count", "seq_count", "transformer", "clf", 130),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}

#: (variant, schedule family, stepped per batch)
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("constant", "constant", False),
    ("step_third_x0.1", "step", False),
    ("step_quarter_x0.5", "step", False),
    ("multistep_50_75", "multistep", False),
    ("multistep_30_60_80", "multistep", False),
    ("exp_to_1pct", "exponential", False),
    ("exp_0.97", "exponential", False),
    ("cosine", "cosine", False),
    ("cosine_floor", "cosine", False),
    ("warmup_cosine", "warmup_cosine", True),
    ("warmup_cosine_seq", "warmup_cosine", False),
    ("onecycle", "onecycle", True),
    ("onecycle_linear", "onecycle", True),
    ("restarts_4", "restarts", False),
    ("restarts_mult2", "restarts", False),
    ("plateau_x0.1_p10", "plateau", False),
    ("plateau_x0.5_p5", "plateau", False),
)
#: Draw weights of the schedule families (constant and cosine are the most common in practice).
SCHEDULE_WEIGHTS = {"constant": 1.6, "step": 1.0, "multistep": 1.0, "exponential": 0.9,
                    "cosine": 1.4, "warmup_cosine": 1.1, "onecycle": 1.0, "restarts": 0.8,
                    "plateau": 1.1}

#: The fresh corpus (``--fresh``, ``data/zoo_fresh``): datasets, architectures and schedules that
#: the main corpus does not have, generated in one go after the advisor's defaults were frozen
#: (session 8) and never used to choose anything: a check of the advisor out of sample, as a new
#: user's runs are. Every fresh run is in split ``fresh``.
FRESH_SEED = 30_11_2026
FRESH_FAMILIES: tuple[Family, ...] = (
    Family("resmlp_moons", "moons", "resmlp", "clf", 100),
    Family("mlp_hastie", "hastie", "mlp", "clf", 100),
    Family("linear_digits", "digits", "linear", "clf", 100),
    Family("lstm_order", "seq_order", "lstm", "clf", 100),
    Family("ae_digits", "digits_ae", "ae", "reg", 100),
)
#: The fresh corpus draws from every schedule of the main one and two it does not have: the
#: linear warm-up and decay of ``transformers``' ``get_linear_schedule_with_warmup`` and a
#: quadratic ``PolynomialLR``.
FRESH_VARIANTS: tuple[tuple[str, str, bool], ...] = VARIANTS + (
    ("warmup_linear", "polynomial", True),
    ("poly2", "polynomial", False),
)

def _hundred_each(*specs: tuple[str, str, str, str]) -> tuple[Family, ...]:
    """Families of 100 runs each from ``(name, dataset, arch, kind)``."""
    return tuple(Family(*spec, runs=100) for spec in specs)


#: The second fresh corpus (``--fresh2``, ``data/zoo_fresh2``): five more families and a schedule
#: family that neither corpus has, generated at the start of session 11 (2026-11-30), before any
#: change of that session, and never used to choose anything: it reports the changes made after
#: the first fresh corpus had been looked at. Every run is in split ``fresh2``.
FRESH2_SEED = 30_11_2026_11
FRESH2_FAMILIES = _hundred_each(
    ("mlp_circles", "circles", "mlp", "clf"), ("cnn1d_waves", "waves", "cnn1d", "clf"),
    ("lnmlp_quantiles", "quantiles", "lnmlp", "clf"),
    ("tanh_friedman3", "make_friedman3", "tanhmlp", "reg"),
    ("embbag_polarity", "polarity", "embbag", "clf"))
#: Every schedule of the first fresh corpus and one family neither has: the inverse square root
#: decay after a linear warm-up (per batch, as transformer recipes use it) and a linear decay to 2%
#: (``LinearLR``, per epoch).
FRESH2_VARIANTS: tuple[tuple[str, str, bool], ...] = FRESH_VARIANTS + (
    ("inverse_sqrt", "inv_sqrt", True),
    ("linear_decay", "inv_sqrt", False),
)

#: The third fresh corpus (``--fresh3``, ``data/zoo_fresh3``): five more families and a schedule
#: family that no other corpus has, generated in session 12 (2026-11-30) after that session's
#: change and never used to choose anything: it reports every rule on runs none was chosen on.
#: Every run is in split ``fresh3``.
FRESH3_SEED = 30_11_2026_12
FRESH3_FAMILIES = _hundred_each(
    ("mlp_blobs", "blobs", "mlp", "clf"), ("mixer_digits", "digits", "mixer", "clf"),
    ("bigru_thirds", "seq_thirds", "bigru", "clf"),
    ("silu_swissroll", "swiss_roll", "silumlp", "reg"),
    ("sine_friedman2", "make_friedman2", "sinmlp", "reg"))
#: Every schedule of the other fresh corpora and one family none has: ``CyclicLR`` (per batch,
#: between a tenth of the rate and the rate, cycles of a fifth of the budget), its amplitude
#: halved each cycle (``triangular2``) or shrunk geometrically (``exp_range``).
FRESH3_VARIANTS = FRESH2_VARIANTS + tuple(
    (f"cyclic_{mode}", "cyclic", True) for mode in ("triangular2", "exp_range"))
VARIANT_INFO = {v: (s, per_batch) for v, s, per_batch in FRESH3_VARIANTS}

HOLDOUT_FAMILIES = frozenset({"mlp_breast_cancer", "mlp_friedman", "gru_ar"})
HOLDOUT_VARIANTS = frozenset({"step_quarter_x0.5", "multistep_30_60_80", "exp_0.97",
                              "cosine_floor", "warmup_cosine_seq", "onecycle_linear",
                              "restarts_mult2", "plateau_x0.5_p5"})

#: Learning-rate decades per optimizer: (low, mid, high) bands, log-uniform inside a band.
LR_BANDS = {
    "adam": ((1e-5, 1e-4), (1e-4, 1e-2), (1e-2, 1e-1)),
    "adamw": ((1e-5, 1e-4), (1e-4, 1e-2), (1e-2, 1e-1)),
    "sgd": ((3e-4, 3e-3), (3e-3, 2e-1), (2e-1, 2.0)),
    "rmsprop": ((1e-5, 1e-4), (1e-4, 3e-3), (3e-3, 3e-2)),
}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
OPTIMIZER_WEIGHTS = (0.35, 0.25, 0.25, 0.15)
BUDGETS = (30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300)
BUDGET_WEIGHTS = (1.0, 1.0, 1.2, 1.0, 1.2, 1.2, 0.9, 0.9, 0.7, 0.4, 0.4)

CLF_METRICS = ("train_loss", "train_acc", "lr", "val_loss", "val_acc", "test_loss", "test_acc")
METRIC_ORDER = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
                "planned_lr")


def split_of(family: str, variant: str) -> str:
    """The split rule: holdout families and holdout schedule variants go to ``holdout``."""
    return "holdout" if family in HOLDOUT_FAMILIES or variant in HOLDOUT_VARIANTS else "tune"


# --------------------------------------------------------------------------------------------
# Configs


def _choice(rng: np.random.Generator, items: Sequence[Any], weights: Sequence[float] | None = None):
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    return items[int(rng.choice(len(items), p=p))]


def _batch_sizes(dataset: str) -> tuple[int, ...]:
    """Batch sizes a user would try; 0 means the full training set (one step per epoch)."""
    if dataset in ("wine", "iris"):
        return (16, 32, 0)
    if dataset in ("breast_cancer", "diabetes"):
        return (32, 64, 0)
    if dataset in ("seq_ar", "seq_order"):
        return (64, 128, 256)
    if dataset == "moons":
        return (32, 64, 0)
    if dataset == "seq_count":
        return (128, 256)
    if dataset in ("circles", "swiss_roll", "make_friedman2"):
        return (32, 64, 0)
    if dataset == "seq_thirds":
        return (64, 128, 256)
    return (32, 64, 128, 256)


def sample_config(fam: Family, i: int, seed: int = ZOO_SEED, *,
                  families: Sequence[Family] = FAMILIES,
                  variant_table: Sequence[tuple[str, str, bool]] = VARIANTS,
                  split: str | None = None) -> dict[str, Any]:
    """The ``i``-th config of family ``fam``: a pure function of (seed, family, i), drawn from
    ``families`` and ``variant_table`` (the main corpus's unless given); ``split`` overrides the
    split rule."""
    rng = np.random.default_rng([seed, list(families).index(fam), i])
    schedules = tuple(dict.fromkeys(s for _, s, _ in variant_table))
    sched = _choice(rng, schedules, [SCHEDULE_WEIGHTS.get(s, 1.0) for s in schedules])
    variants = [v for v, s, _ in variant_table if s == sched]
    variant = variants[0] if len(variants) == 1 or rng.random() < 0.65 else variants[1]
    opt = _choice(rng, OPTIMIZERS, OPTIMIZER_WEIGHTS)
    band = _choice(rng, ("low", "mid", "high"), (0.12, 0.7, 0.18))
    lo, hi = LR_BANDS[opt][("low", "mid", "high").index(band)]
    lr = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    wd = float(_choice(rng, (1e-2, 3e-2, 1e-1))) if opt == "adamw" else \
        float(_choice(rng, (0.0, 0.0, 0.0, 1e-5, 1e-4, 1e-3)))
    budget = int(_choice(rng, BUDGETS, BUDGET_WEIGHTS))
    val_every = int(_choice(rng, (1, 2, 5), (0.7, 0.15, 0.15)))
    cfg: dict[str, Any] = {
        "task": f"{fam.name}/{variant}", "run_id": f"{fam.name}-{i:04d}", "family": fam.name,
        "schedule": sched, "schedule_variant": variant,
        "per_batch_schedule": VARIANT_INFO[variant][1], "dataset": fam.dataset, "arch": fam.arch,
        "kind": fam.kind, "optimizer": opt, "lr": float(f"{lr:.4g}"), "lr_band": band,
        "weight_decay": wd, "momentum": 0.9 if opt == "sgd" else 0.0,
        "nesterov": bool(opt == "sgd" and rng.random() < 0.3),
        "batch_size": int(_choice(rng, _batch_sizes(fam.dataset))), "budget": budget,
        "val_every": val_every, "seed": int(rng.integers(2**31 - 1)),
        "dropout": float(_choice(rng, (0.0, 0.0, 0.1, 0.2, 0.3, 0.5))),
        "width": int(_choice(rng, (16, 32, 64) if fam.arch in ("gru", "lstm", "transformer",
                                                            "cnn1d", "embbag", "bigru",
                                                            "mixer")
                             else (8, 16) if fam.arch == "cnn" else (32, 64, 128, 256))),
        "depth": int(_choice(rng, (1, 2) if fam.arch in ("gru", "lstm", "transformer", "cnn",
                                                      "cnn1d", "embbag", "bigru", "mixer")
                             else (1, 2, 3))),
        "train_frac": float(_choice(rng, (1.0, 0.5, 0.2), (0.6, 0.2, 0.2))),
        "label_smoothing": 0.0, "label_noise": 0.0,
    }
    if fam.kind == "clf":
        cfg["label_smoothing"] = float(_choice(rng, (0.0, 0.0, 0.0, 0.05, 0.1)))
        cfg["label_noise"] = float(_choice(rng, (0.0, 0.0, 0.0, 0.1, 0.2, 0.3)))
    if fam.arch == "transformer" and cfg["width"] == 16:
        cfg["width"] = 32 if rng.random() < 0.5 else 16
    cfg["split"] = split or split_of(fam.name, variant)
    return cfg


def all_configs(seed: int = ZOO_SEED) -> list[dict[str, Any]]:
    return [sample_config(f, i, seed) for f in FAMILIES for i in range(f.runs)]


def _split_configs(families: Sequence[Family], variants: Sequence[tuple[str, str, bool]],
                   seed: int, split: str) -> list[dict[str, Any]]:
    return [sample_config(f, i, seed, families=families, variant_table=variants, split=split)
            for f in families for i in range(f.runs)]


def fresh_configs(seed: int = FRESH_SEED) -> list[dict[str, Any]]:
    """The fresh corpus's configs (see :data:`FRESH_FAMILIES`), all in split ``fresh``."""
    return _split_configs(FRESH_FAMILIES, FRESH_VARIANTS, seed, "fresh")


def fresh2_configs(seed: int = FRESH2_SEED) -> list[dict[str, Any]]:
    """The second fresh corpus's configs (see :data:`FRESH2_FAMILIES`), all in split
    ``fresh2``."""
    return _split_configs(FRESH2_FAMILIES, FRESH2_VARIANTS, seed, "fresh2")


def fresh3_configs(seed: int = FRESH3_SEED) -> list[dict[str, Any]]:
    """The third fresh corpus's configs (see :data:`FRESH3_FAMILIES`), all in split
    ``fresh3``."""
    return _split_configs(FRESH3_FAMILIES, FRESH3_VARIANTS, seed, "fresh3")


# --------------------------------------------------------------------------------------------
# Data

_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _seq_ar(n: int = 2000, length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    total = length + 1 + 30  # 30 steps of burn-in
    x = np.zeros((n, total))
    x[:, :4] = rng.normal(0, 1, (n, 4))
    eps = rng.normal(0, 0.3, (n, total))
    for t in range(4, total):
        x[:, t] = (0.5 * x[:, t - 1] - 0.3 * x[:, t - 2] + 0.4 * np.tanh(2 * x[:, t - 3])
                   + 0.3 * np.sin(x[:, t - 4]) + eps[:, t])
    x = x[:, 30:]
    return x[:, :length, None].astype(np.float32), x[:, length].astype(np.float32)


def _seq_order(n: int = 1500, length: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of uniform values; the class: whether the largest comes before the smallest."""
    rng = np.random.default_rng(DATA_SEED + 2)
    x = rng.uniform(-1.0, 1.0, (n, length))
    y = (x.argmax(1) < x.argmin(1)).astype(np.int64)
    return x[:, :, None].astype(np.float32), y


def _seq_count(n: int = 1500, length: int = 16, vocab: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED + 1)
    tok = rng.integers(0, vocab, (n, length))
    counts = np.stack([(tok == v).sum(1) for v in range(vocab)], 1)
    return tok.astype(np.int64), counts.argmax(1).astype(np.int64)  # ties: the smallest symbol


def _waves(n: int = 2000, length: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Noisy periodic signals; the class: sine, square, triangle or sawtooth (random frequency,
    phase, amplitude and offset; noise of 0.6 of the unit amplitude)."""
    rng = np.random.default_rng(DATA_SEED + 3)
    y = rng.integers(0, 4, n)
    t = np.arange(length)[None, :]
    phase = (rng.uniform(1.0, 4.0, (n, 1)) * t / length + rng.uniform(0, 1, (n, 1))) % 1.0
    shapes = np.stack([np.sin(2 * np.pi * phase), np.where(phase < 0.5, 1.0, -1.0),
                       4 * np.abs(phase - 0.5) - 1, 2 * phase - 1])
    x = shapes[y, np.arange(n)] * rng.uniform(0.5, 1.5, (n, 1)) + rng.normal(0, 0.3, (n, 1))
    x = x + rng.normal(0, 0.6, (n, length))
    return x[:, :, None].astype(np.float32), y.astype(np.int64)


def _seq_thirds(n: int = 1200, length: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of Gaussian values with a bump hidden in one third; the class: which third
    (the bump, of height 2.5, is about as large as the noise's extremes, so some are
    ambiguous; at 1.2, a first try, 99% of the runs stayed near chance)."""
    rng = np.random.default_rng(DATA_SEED + 5)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, length))
    at = y * (length // 3) + rng.integers(0, length // 3, n)
    x[np.arange(n), at] += 2.5
    return x[:, :, None].astype(np.float32), y.astype(np.int64)


def _polarity(n: int = 2000, length: int = 20, vocab: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Bags of tokens; a third of the vocabulary counts +1, a third -1; the class: whether the
    sum (plus logistic noise) is positive. A bag-of-words sentiment task in miniature."""
    rng = np.random.default_rng(DATA_SEED + 4)
    weight = np.repeat([1.0, -1.0, 0.0], vocab // 3)[rng.permutation(vocab)]
    tok = rng.integers(0, vocab, (n, length))
    score = weight[tok].sum(1) + rng.logistic(0, 1.0, n)
    return tok.astype(np.int64), (score > 0).astype(np.int64)


#: scikit-learn's generated datasets: name -> (generator, its arguments, the targets' dtype)
_GENERATED: dict[str, tuple[str, dict[str, Any], type]] = {
    "make_regression": ("make_regression",
                        {"n_samples": 1000, "n_features": 20, "n_informative": 10, "noise": 20.0},
                        np.float32),
    "make_friedman1": ("make_friedman1", {"n_samples": 1000, "n_features": 10, "noise": 1.0},
                       np.float32),
    "moons": ("make_moons", {"n_samples": 1000, "noise": 0.3}, np.int64),
    "circles": ("make_circles", {"n_samples": 1000, "noise": 0.15, "factor": 0.5}, np.int64),
    "quantiles": ("make_gaussian_quantiles", {"n_samples": 1500, "n_features": 6, "n_classes": 3},
                  np.int64),
    "make_friedman3": ("make_friedman3", {"n_samples": 1000, "noise": 0.1}, np.float32),
    "blobs": ("make_blobs", {"n_samples": 1500, "n_features": 8, "centers": 5,
                             "cluster_std": 3.0}, np.int64),
    "make_friedman2": ("make_friedman2", {"n_samples": 1000, "noise": 30.0}, np.float32),
}


def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets (int64 classes or float32 values), the same for every run."""
    if name in _DATA:
        return _DATA[name]
    import sklearn.datasets as skd

    if name in ("digits", "wine", "iris", "breast_cancer"):
        b = getattr(skd, f"load_{name}")()
        out = (b.data.astype(np.float32), b.target.astype(np.int64))
    elif name == "diabetes":
        b = skd.load_diabetes()
        out = (b.data.astype(np.float32), b.target.astype(np.float32))
    elif name in _GENERATED:
        generator, kwargs, target = _GENERATED[name]
        X, y = getattr(skd, generator)(**kwargs, random_state=DATA_SEED)
        out = (X.astype(np.float32), y.astype(target))
    elif name == "hastie":
        X, y = skd.make_hastie_10_2(n_samples=2000, random_state=DATA_SEED)
        out = (X.astype(np.float32), (y > 0).astype(np.int64))
    elif name == "digits_ae":  # reconstruct the digit images: the targets are the inputs
        X = skd.load_digits().data.astype(np.float32)
        out = (X, X)
    elif name == "waves":
        out = _waves()
    elif name == "polarity":
        out = _polarity()
    elif name == "seq_thirds":
        out = _seq_thirds()
    elif name == "swiss_roll":  # the roll's position t from the noisy 3-D point
        X, t = skd.make_swiss_roll(n_samples=1000, noise=0.5, random_state=DATA_SEED)
        out = (X.astype(np.float32), t.astype(np.float32))
    elif name == "seq_order":
        out = _seq_order()
    elif name == "seq_ar":
        out = _seq_ar()
    elif name == "seq_count":
        out = _seq_count()
    else:
        raise ValueError(name)
    _DATA[name] = out
    return out


def split_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """The run's train/val/test tensors (20% val, 20% test, ``train_frac`` of the rest)."""
    import torch

    X, y = dataset(cfg["dataset"])
    rng = np.random.default_rng([cfg["seed"], 1])
    n = len(y)
    perm = rng.permutation(n)
    n_test = n_val = int(round(0.2 * n))
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    tr = tr[:max(24, int(round(cfg["train_frac"] * len(tr))))]
    Xtr, Xva, Xte = X[tr], X[va], X[te]
    ytr, yva, yte = y[tr].copy(), y[va], y[te]
    # tabular, AR and signal inputs: standardise on the train split (tokens are left as they are)
    if cfg["dataset"] not in ("seq_count", "polarity"):
        axes = (0, 1) if Xtr.ndim == 3 else 0
        mu, sd = Xtr.mean(axes, keepdims=True), Xtr.std(axes, keepdims=True)
        sd = np.where(sd > 1e-6, sd, 1.0)  # constant in train (digits' border pixels): as is
        Xtr, Xva, Xte = ((a - mu) / sd for a in (Xtr, Xva, Xte))
    n_classes = 0
    if cfg["dataset"] == "digits_ae":  # the targets are the standardised inputs
        ytr, yva, yte = Xtr, Xva, Xte
    elif cfg["kind"] == "reg":
        mu, sd = ytr.mean(), ytr.std() + 1e-6
        ytr, yva, yte = ((a - mu) / sd for a in (ytr, yva, yte))
    else:
        n_classes = int(y.max()) + 1
        if cfg["label_noise"] > 0:
            flip = rng.random(len(ytr)) < cfg["label_noise"]
            shift = rng.integers(1, n_classes, len(ytr))
            ytr[flip] = (ytr[flip] + shift[flip]) % n_classes
    t = (lambda a: torch.from_numpy(np.ascontiguousarray(a)))  # noqa: E731
    return {"Xtr": t(Xtr), "ytr": t(ytr), "Xva": t(Xva), "yva": t(yva), "Xte": t(Xte),
            "yte": t(yte), "n_classes": n_classes, "in_dim": int(np.prod(X.shape[1:])),
            "out_dim": n_classes or int(np.prod(y.shape[1:]))}


# --------------------------------------------------------------------------------------------
# Models, optimizers, schedules


def build_model(cfg: dict[str, Any], in_dim: int, n_out: int):
    import torch
    from torch import nn

    arch, w, depth, p = cfg["arch"], cfg["width"], cfg["depth"], cfg["dropout"]
    if arch == "mlp":
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, w), nn.ReLU(), nn.Dropout(p)]
            d = w
        layers.append(nn.Linear(d, n_out))
        return nn.Sequential(*layers)
    if arch == "cnn":
        convs: list[nn.Module] = [nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, w, 3, padding=1),
                                  nn.ReLU()]
        if depth == 2:
            convs += [nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU()]
        c = w * depth
        return nn.Sequential(*convs, nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(p),
                             nn.Linear(c * 16, 64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, n_out))
    if arch in ("lnmlp", "tanhmlp", "silumlp", "sinmlp"):
        # LayerNorm + GELU blocks; a deeper tanh network; SiLU; sine activations (SIREN-like)
        class Sine(nn.Module):
            def forward(self, x):
                return torch.sin(x)

        act = {"tanhmlp": nn.Tanh, "silumlp": nn.SiLU, "sinmlp": Sine}
        layers = []
        d = in_dim
        for _ in range(depth + (2 if arch == "tanhmlp" else 0)):
            layers += ([nn.Linear(d, w), nn.LayerNorm(w), nn.GELU()] if arch == "lnmlp"
                       else [nn.Linear(d, w), act[arch]()]) + [nn.Dropout(p)]
            d = w
        layers.append(nn.Linear(d, n_out))
        return nn.Sequential(*layers)
    if arch == "cnn1d":  # 1-D convolutions over the signal, global average pooling
        convs = [nn.Conv1d(1, w, 5, padding=2), nn.ReLU()]
        if depth == 2:
            convs += [nn.Conv1d(w, 2 * w, 5, padding=2), nn.ReLU()]
        return nn.Sequential(nn.Flatten(), nn.Unflatten(1, (1, -1)), *convs,
                             nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(p),
                             nn.Linear(w * depth, n_out))
    if arch == "mixer":  # an MLP-Mixer on the digit's sixteen 2x2 patches
        class Mixer(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.embed = nn.Linear(4, w)
                self.norms = nn.ModuleList(nn.LayerNorm(w) for _ in range(depth))
                self.tokens = nn.ModuleList(nn.Sequential(
                    nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)) for _ in range(depth))
                self.channels = nn.ModuleList(nn.Sequential(
                    nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(), nn.Dropout(p),
                    nn.Linear(2 * w, w)) for _ in range(depth))
                self.head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, n_out))

            def forward(self, x):
                patches = x.view(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)
                h = self.embed(patches)
                for norm, tok, ch in zip(self.norms, self.tokens, self.channels, strict=True):
                    h = h + tok(norm(h).transpose(1, 2)).transpose(1, 2)
                    h = h + ch(h)
                return self.head(h.mean(1))

        return Mixer()
    if arch == "embbag":  # mean of token embeddings, one hidden layer
        return nn.Sequential(nn.EmbeddingBag(30, w, mode="mean"), nn.ReLU(), nn.Dropout(p),
                             nn.Linear(w, n_out))
    if arch == "linear":  # multinomial logistic regression: a convex problem
        return nn.Linear(in_dim, n_out)
    if arch == "resmlp":
        class ResMLP(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inp = nn.Linear(in_dim, w)
                self.blocks = nn.ModuleList(
                    nn.Sequential(nn.BatchNorm1d(w), nn.ReLU(), nn.Linear(w, w), nn.Dropout(p))
                    for _ in range(depth))
                self.out = nn.Sequential(nn.BatchNorm1d(w), nn.ReLU(), nn.Linear(w, n_out))

            def forward(self, x):
                h = self.inp(x)
                for block in self.blocks:
                    h = h + block(h)
                return self.out(h)

        return ResMLP()
    if arch == "ae":  # an autoencoder with an 8-unit bottleneck
        return nn.Sequential(nn.Linear(in_dim, w), nn.ReLU(), nn.Dropout(p), nn.Linear(w, 8),
                             nn.ReLU(), nn.Linear(8, w), nn.ReLU(), nn.Dropout(p),
                             nn.Linear(w, n_out))
    if arch == "bigru":  # a bidirectional GRU, its outputs averaged over the sequence
        class BiGRU(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.rnn = nn.GRU(1, w, num_layers=depth, batch_first=True, bidirectional=True,
                                  dropout=p if depth > 1 else 0.0)
                self.head = nn.Sequential(nn.Dropout(p), nn.Linear(2 * w, n_out))

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.head(out.mean(1))

        return BiGRU()
    if arch in ("gru", "lstm"):
        class GRUReg(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                rnn = nn.GRU if arch == "gru" else nn.LSTM
                self.gru = rnn(1, w, num_layers=depth, batch_first=True,
                               dropout=p if depth > 1 else 0.0)
                self.drop = nn.Dropout(p)
                self.head = nn.Linear(w, n_out)

            def forward(self, x):
                out, _ = self.gru(x)
                return self.head(self.drop(out[:, -1]))

        return GRUReg()
    if arch == "transformer":
        class TinyTransformer(nn.Module):
            def __init__(self, vocab: int = 4, length: int = 16) -> None:
                super().__init__()
                self.emb = nn.Embedding(vocab, w)
                self.pos = nn.Parameter(torch.randn(1, length, w) * 0.1)
                self.layers = nn.ModuleList(
                    nn.TransformerEncoderLayer(w, 2, 2 * w, dropout=p, batch_first=True)
                    for _ in range(depth))
                self.head = nn.Linear(w, n_out)

            def forward(self, x):
                h = self.emb(x) + self.pos
                for layer in self.layers:
                    h = layer(h)
                return self.head(h.mean(1))

        return TinyTransformer()
    raise ValueError(arch)


def make_optimizer(cfg: dict[str, Any], params):
    import torch

    opt, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if opt == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if opt == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if opt == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd,
                               nesterov=cfg["nesterov"])
    if opt == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise ValueError(opt)


def make_scheduler(cfg: dict[str, Any], opt, steps_per_epoch: int):
    """The run's scheduler (None for constant) and whether it is stepped per batch."""
    from torch.optim import lr_scheduler as S

    v, B, lr = cfg["schedule_variant"], cfg["budget"], cfg["lr"]
    per_batch = VARIANT_INFO[v][1]
    if v == "constant":
        return None, False
    if v == "step_third_x0.1":
        return S.StepLR(opt, step_size=max(1, B // 3), gamma=0.1), per_batch
    if v == "step_quarter_x0.5":
        return S.StepLR(opt, step_size=max(1, B // 4), gamma=0.5), per_batch
    if v == "multistep_50_75":
        return S.MultiStepLR(opt, [B // 2, (3 * B) // 4], gamma=0.1), per_batch
    if v == "multistep_30_60_80":
        return S.MultiStepLR(opt, [int(0.3 * B), int(0.6 * B), int(0.8 * B)], gamma=0.2), \
            per_batch
    if v == "exp_to_1pct":
        return S.ExponentialLR(opt, gamma=0.01 ** (1.0 / B)), per_batch
    if v == "exp_0.97":
        return S.ExponentialLR(opt, gamma=0.97), per_batch
    if v == "cosine":
        return S.CosineAnnealingLR(opt, T_max=B), per_batch
    if v == "cosine_floor":
        return S.CosineAnnealingLR(opt, T_max=B, eta_min=0.05 * lr), per_batch
    if v == "warmup_cosine":
        total = B * steps_per_epoch
        warm = max(1, int(0.05 * total))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        return S.LambdaLR(opt, factor), per_batch
    if v == "warmup_cosine_seq":
        warm = max(1, B // 10)
        return S.SequentialLR(opt, [S.LinearLR(opt, start_factor=0.01, total_iters=warm),
                                    S.CosineAnnealingLR(opt, T_max=B - warm)],
                              milestones=[warm]), per_batch
    if v == "onecycle":
        return S.OneCycleLR(opt, max_lr=lr, total_steps=B * steps_per_epoch, pct_start=0.3), \
            per_batch
    if v == "onecycle_linear":
        return S.OneCycleLR(opt, max_lr=lr, total_steps=B * steps_per_epoch, pct_start=0.2,
                            anneal_strategy="linear"), per_batch
    if v == "restarts_4":
        return S.CosineAnnealingWarmRestarts(opt, T_0=max(1, B // 4)), per_batch
    if v == "restarts_mult2":
        return S.CosineAnnealingWarmRestarts(opt, T_0=max(1, B // 7), T_mult=2), per_batch
    if v == "warmup_linear":  # transformers' get_linear_schedule_with_warmup, 6% warm-up
        total = B * steps_per_epoch
        warm = max(1, int(0.06 * total))

        def linear(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        return S.LambdaLR(opt, linear), per_batch
    if v == "poly2":
        return S.PolynomialLR(opt, total_iters=B, power=2.0), per_batch
    if v == "inverse_sqrt":  # linear warm-up over 5% of the steps, then sqrt(warm / step)
        warm = max(1, int(0.05 * B * steps_per_epoch))
        return S.LambdaLR(opt, lambda step: (step + 1) / warm if step < warm
                          else math.sqrt(warm / (step + 1))), per_batch
    if v == "linear_decay":
        return S.LinearLR(opt, start_factor=1.0, end_factor=0.02, total_iters=B), per_batch
    if v in ("cyclic_triangular2", "cyclic_exp_range"):  # cycles of a fifth of the budget
        up = max(1, (B * steps_per_epoch) // 10)
        mode = "triangular2" if v == "cyclic_triangular2" else "exp_range"
        gamma = 0.5 ** (1.0 / (2 * up))  # exp_range: the amplitude halves every cycle too
        return S.CyclicLR(opt, base_lr=0.1 * lr, max_lr=lr, step_size_up=up, mode=mode,
                          gamma=gamma, cycle_momentum=False), per_batch
    if v == "plateau_x0.1_p10":
        return S.ReduceLROnPlateau(opt, factor=0.1, patience=10), per_batch
    if v == "plateau_x0.5_p5":
        return S.ReduceLROnPlateau(opt, factor=0.5, patience=5), per_batch
    raise ValueError(v)


def _step_epoch(sched, per_batch: bool, steps_per_epoch: int, opt, step_opt: bool) -> None:
    """Advance a (non-plateau) scheduler by one epoch's worth of steps, as training does."""
    for _ in range(steps_per_epoch if per_batch else 1):
        if step_opt:
            opt.step()  # no gradient: a no-op that keeps torch's step-order check quiet
        sched.step()


def planned_lr(cfg: dict[str, Any], steps_per_epoch: int) -> np.ndarray | None:
    """The rate of each epoch 1..budget (at its first batch) as the schedule plans it, computed
    before training on a dummy parameter; None for ReduceLROnPlateau (its future is unknown)."""
    import torch

    if cfg["schedule"] == "plateau":
        return None
    dummy = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer(cfg, [dummy])
    sched, per_batch = make_scheduler(cfg, opt, steps_per_epoch)
    out = np.empty(cfg["budget"])
    for e in range(cfg["budget"]):
        out[e] = opt.param_groups[0]["lr"]
        if sched is not None:
            _step_epoch(sched, per_batch, steps_per_epoch, opt, step_opt=True)
    return out


# --------------------------------------------------------------------------------------------
# Training


def train_run(cfg: dict[str, Any]) -> tuple[list[tuple[int, str, float]], dict[str, Any]]:
    """Train one config; return its records ``(epoch, metric, value)`` (finite values only) and
    a summary (``n_train``, ``steps_per_epoch``, ``epochs_run``, ``diverged``, ``seconds``)."""
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(cfg["seed"])
    d = split_data(cfg)
    clf = cfg["kind"] == "clf"
    n_out = d["out_dim"]
    model = build_model(cfg, d["in_dim"], n_out)
    opt = make_optimizer(cfg, model.parameters())
    n_train = len(d["ytr"])
    bs = cfg["batch_size"] or n_train
    spe = math.ceil(n_train / bs)
    plan = planned_lr(cfg, spe)
    sched, per_batch = make_scheduler(cfg, opt, spe)
    plateau = cfg["schedule"] == "plateau"
    if clf:
        crit = torch.nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    else:
        mse = torch.nn.MSELoss()

        def crit(out, y):
            return mse(out.squeeze(-1), y)

    gen = torch.Generator().manual_seed(cfg["seed"])
    rec: list[tuple[int, str, float]] = []

    def put(epoch: int, metric: str, value: float) -> None:
        if math.isfinite(value):
            rec.append((epoch, metric, value))

    def evaluate(X, y) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(X)
            loss = float(crit(out, y))
            acc = float((out.argmax(1) == y).float().mean()) if clf else math.nan
        return loss, acc

    Xtr, ytr = d["Xtr"], d["ytr"]
    epochs_run, diverged = 0, False
    for epoch in range(1, cfg["budget"] + 1):
        put(epoch, "lr", opt.param_groups[0]["lr"])
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        tot_loss, tot_correct = 0.0, 0.0
        for b in range(spe):
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = Xtr[idx], ytr[idx]
            out = model(xb)
            loss = crit(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_batch:
                sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            if clf:
                tot_correct += float((out.argmax(1) == yb).sum())
        train_loss = tot_loss / n_train
        if not math.isfinite(train_loss):
            diverged = True
            break
        epochs_run = epoch
        put(epoch, "train_loss", train_loss)
        if clf:
            put(epoch, "train_acc", tot_correct / n_train)
        if epoch % cfg["val_every"] == 0:
            vl, va = evaluate(d["Xva"], d["yva"])
            tl, ta = evaluate(d["Xte"], d["yte"])
            put(epoch, "val_loss", vl)
            put(epoch, "test_loss", tl)
            if clf:
                put(epoch, "val_acc", va)
                put(epoch, "test_acc", ta)
            if plateau and math.isfinite(vl):
                sched.step(vl)
        if sched is not None and not per_batch and not plateau:
            sched.step()
    if plan is not None:
        rec.extend((e + 1, "planned_lr", float(v)) for e, v in enumerate(plan))
    summary = {"n_train": n_train, "steps_per_epoch": spe, "epochs_run": epochs_run,
               "diverged": diverged, "seconds": round(time.perf_counter() - t0, 3)}
    return rec, summary


# --------------------------------------------------------------------------------------------
# Chunks, merge, CLI


def _fmt(values: np.ndarray) -> list[str]:
    return [f"{v:.6g}" for v in values.astype(np.float32).tolist()]


def records_frame(cfg: dict[str, Any], rec: list[tuple[int, str, float]]) -> pd.DataFrame:
    """One run's tidy rows, ordered by metric then epoch (compresses better than epoch-major)."""
    df = pd.DataFrame(rec, columns=["epoch", "metric", "value"])
    order = {m: i for i, m in enumerate(METRIC_ORDER)}
    df = df.assign(_o=df.metric.map(order)).sort_values(["_o", "epoch"], kind="stable")
    df["value"] = _fmt(df["value"].to_numpy())
    df.insert(0, "run_id", cfg["run_id"])
    df.insert(0, "task", cfg["task"])
    df.insert(0, "source", "zoo")
    return df.drop(columns="_o")


def chunk_paths(i: int, chunk_dir: Path) -> tuple[Path, Path]:
    return chunk_dir / f"chunk_{i:02d}.csv.gz", chunk_dir / f"chunk_{i:02d}_configs.csv.gz"


def run_chunk(i: int, n: int, configs: list[dict[str, Any]] | None = None,
              out_dir: Path = ZOO_DIR) -> bool:
    """Train chunk ``i`` of ``n`` (configs ``i::n``, into ``out_dir/chunks``); False if it was
    already done."""
    curves, cfgs = chunk_paths(i, out_dir / "chunks")
    if curves.exists() and cfgs.exists():
        print(f"[zoo] chunk {i:02d} already done, skipped", file=sys.stderr)
        return False
    configs = (configs or all_configs())[i::n]
    curves.parent.mkdir(parents=True, exist_ok=True)
    frames, rows = [], []
    t0 = time.time()
    for k, cfg in enumerate(configs, 1):
        rec, summary = train_run(cfg)
        frames.append(records_frame(cfg, rec))
        rows.append({**cfg, **summary})
        if k % 10 == 0 or k == len(configs):
            print(f"[zoo] chunk {i:02d}/{n}: {k}/{len(configs)} runs, {time.time() - t0:.0f}s",
                  file=sys.stderr, flush=True)
    for df, path in ((pd.DataFrame(rows), cfgs), (pd.concat(frames, ignore_index=True), curves)):
        tmp = path.with_name(path.name + ".tmp")
        df.to_csv(tmp, index=False, compression="gzip")
        tmp.replace(path)
    print(f"[zoo] chunk {i:02d}/{n} done: {len(configs)} runs in {time.time() - t0:.0f}s",
          file=sys.stderr, flush=True)
    return True


def merge(configs: list[dict[str, Any]] | None = None, out_dir: Path = ZOO_DIR) -> None:
    """Merge the chunks into ``zoo.csv.gz`` and ``zoo_configs.csv.gz``; remove the chunks."""
    cfg_files = sorted((out_dir / "chunks").glob("chunk_*_configs.csv.gz"))
    curve_files = [p.with_name(p.name.replace("_configs", "")) for p in cfg_files]
    if not cfg_files or not all(p.exists() for p in curve_files):
        raise SystemExit("[zoo] no complete chunks to merge")
    cfg = pd.concat([pd.read_csv(p) for p in cfg_files], ignore_index=True)
    expected = [c["run_id"] for c in (configs or all_configs())]
    missing = sorted(set(expected) - set(cfg.run_id))
    if missing:
        raise SystemExit(f"[zoo] {len(missing)} configured runs missing, e.g. {missing[:3]}")
    order = {r: k for k, r in enumerate(expected)}
    cfg = cfg.sort_values("run_id", key=lambda s: s.map(order), kind="stable")
    first = ["task", "run_id", "family", "schedule", "schedule_variant", "dataset", "arch",
             "optimizer", "lr", "budget", "val_every", "seed", "split"]
    cfg = cfg[first + [c for c in cfg.columns if c not in first]]
    curves = pd.concat([pd.read_csv(p, dtype={"value": str}) for p in curve_files],
                       ignore_index=True)
    curves = curves.sort_values("run_id", key=lambda s: s.map(order), kind="stable")
    out_dir.mkdir(parents=True, exist_ok=True)
    for df, name in ((cfg, "zoo_configs.csv.gz"), (curves, "zoo.csv.gz")):
        tmp = out_dir / (name + ".tmp")
        df.to_csv(tmp, index=False, compression={"method": "gzip", "compresslevel": 9,
                                                 "mtime": 0})
        tmp.replace(out_dir / name)
    for p in [*cfg_files, *curve_files]:
        p.unlink()
    print(f"[zoo] merged {len(cfg)} runs, {len(curves)} rows into {out_dir}", file=sys.stderr)


def print_list(configs: list[dict[str, Any]], verbose: bool) -> None:
    df = pd.DataFrame(configs)
    if verbose:
        with pd.option_context("display.max_rows", None, "display.width", 250,
                               "display.max_columns", None):
            print(df.to_string(index=False))
    print(f"{len(df)} runs\n")
    print(pd.crosstab(df.family, df.split, margins=True).to_string(), "\n")
    print(pd.crosstab(df.schedule, df.split, margins=True).to_string(), "\n")
    print(pd.crosstab(df.schedule_variant, df.split).to_string(), "\n")
    print(pd.crosstab(df.optimizer, df.lr_band).to_string(), "\n")
    print(pd.crosstab(df.budget, df.val_every).to_string())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--list", action="store_true", help="print the config counts and exit")
    g.add_argument("--chunk", type=int, help="train chunk I (configs I::N) of --chunks N")
    g.add_argument("--merge", action="store_true", help="merge the chunks into the corpus")
    g.add_argument("--summary", action="store_true",
                   help="print markdown tables of the merged corpus (counts, behaviour)")
    g.add_argument("--time", type=int, metavar="K",
                   help="train every K-th config of each family (nothing written); time per family")
    p.add_argument("--chunks", type=int, default=40)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--fresh", action="store_true",
                       help="the fresh corpus (FRESH_FAMILIES, into data/zoo_fresh), not the zoo")
    which.add_argument("--fresh2", action="store_true",
                       help="the second fresh corpus (FRESH2_FAMILIES, into data/zoo_fresh2)")
    which.add_argument("--fresh3", action="store_true",
                       help="the third fresh corpus (FRESH3_FAMILIES, into data/zoo_fresh3)")
    p.add_argument("--verbose", action="store_true", help="--list: print every config")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configs, out_dir = ((fresh_configs(), FRESH_DIR) if args.fresh else
                        (fresh2_configs(), FRESH2_DIR) if args.fresh2 else
                        (fresh3_configs(), FRESH3_DIR) if args.fresh3 else (all_configs(), ZOO_DIR))
    if args.list:
        print_list(configs, args.verbose)
    elif args.merge:
        merge(configs, out_dir)
    elif args.summary:
        print(summary_markdown(out_dir))
    elif args.time:
        rows = []
        for cfg in configs[::args.time]:
            rec, s = train_run(cfg)
            rows.append({**cfg, **s, "rows": len(rec)})
            print(f"{cfg['run_id']:24s} {cfg['schedule_variant']:20s} {cfg['optimizer']:8s} "
                  f"bs={cfg['batch_size']:3d} B={cfg['budget']:3d} {s['seconds']:6.2f}s "
                  f"div={s['diverged']}", flush=True)
        df = pd.DataFrame(rows)
        per = df.groupby("family").agg(n=("seconds", "size"), mean_s=("seconds", "mean"),
                                       s_per_epoch=("seconds", lambda x: 0))
        per["s_per_epoch"] = (df.groupby("family").seconds.sum()
                              / df.groupby("family").epochs_run.sum().clip(lower=1))
        counts = pd.Series([c["family"] for c in configs]).value_counts()
        per["runs"] = [counts[f] for f in per.index]
        per["est_total_s"] = per.mean_s * per.runs
        print(per.to_string())
        print(f"estimated total: {per.est_total_s.sum() / 60:.1f} min; "
              f"rows per run {df.rows.mean():.0f}")
    else:
        if not 0 <= args.chunk < args.chunks:
            raise SystemExit("--chunk must be in [0, --chunks)")
        run_chunk(args.chunk, args.chunks, configs, out_dir)
    return 0



#: The validation loss of a model that knows only the training prior: ln(classes) for
#: classification, 1 for the standardised regression targets.
CHANCE_LOSS = {"digits": math.log(10), "wine": math.log(3), "iris": math.log(3),
               "breast_cancer": math.log(2), "seq_count": math.log(4), "diabetes": 1.0,
               "make_regression": 1.0, "make_friedman1": 1.0, "seq_ar": 1.0,
               "moons": math.log(2), "hastie": math.log(2), "seq_order": math.log(2),
               "digits_ae": 1.0, "circles": math.log(2), "waves": math.log(4),
               "quantiles": math.log(3), "make_friedman3": 1.0, "polarity": math.log(2),
               "blobs": math.log(5), "seq_thirds": math.log(3), "swiss_roll": 1.0,
               "make_friedman2": 1.0}


def behaviour(runs) -> pd.DataFrame:
    """Per run: how its validation loss behaved (the shares the data README reports).

    ``best_before_50`` / ``_80``: the best validation loss came before half / 80% of the budget;
    ``end_5pct_above_best``: the last validation loss is 5% or more above the best (overfitting
    or noise; what a keep-the-last trainer loses); ``improving_at_end``: the best is the last
    validation and 1% below the value at 90% of the budget; ``never_learned``: the best stays
    above 0.9 of the chance loss (:data:`CHANCE_LOSS`); ``diverged``: the training loss became
    non-finite and the run stopped."""
    rows = []
    for r in runs:
        c, v = r.config, r.metrics["val_loss"]
        fin = np.isfinite(v)
        d = {"family": c["family"], "schedule": c["schedule"], "lr_band": c["lr_band"],
             "split": c["split"], "diverged": bool(c["diverged"])}
        if fin.sum() >= 2:
            i, n = int(np.nanargmin(v)), len(v)
            best, last = v[i], v[fin][-1]
            k = max(0, int(0.9 * n) - 1)
            d.update(best_before_50=(i + 1) / n < 0.5, best_before_80=(i + 1) / n < 0.8,
                     end_5pct_above_best=bool(last - best >= 0.05 * abs(best)),
                     improving_at_end=bool(i == n - 1 and fin[k] and v[-1] < 0.99 * v[k]),
                     never_learned=bool(best > 0.9 * CHANCE_LOSS[c["dataset"]]))
        else:
            d["never_learned"] = True
        rows.append(d)
    return pd.DataFrame(rows)


BEHAVIOUR_COLS = ("diverged", "best_before_50", "best_before_80", "end_5pct_above_best",
                  "improving_at_end", "never_learned")


def summary_markdown(out_dir: Path = ZOO_DIR) -> str:
    """Markdown tables of a merged corpus: counts per family/schedule/split and behaviour."""
    from benchmarks._curves import load_zoo

    cfg = pd.read_csv(out_dir / "zoo_configs.csv.gz")
    runs = load_zoo(out_dir)
    out = [f"{len(cfg)} runs; {sum(r.n_evals for r in runs):,} validation points; "
           f"{len(pd.read_csv(out_dir / 'zoo.csv.gz', usecols=['epoch'])):,} rows.", ""]

    def table(df: pd.DataFrame) -> None:
        df = df.reset_index()
        out.append("| " + " | ".join(map(str, df.columns)) + " |")
        out.append("|" + "---|" * len(df.columns))
        for row in df.itertuples(index=False):
            out.append("| " + " | ".join(f"{x:.2f}" if isinstance(x, float) else str(x)
                                         for x in row) + " |")
        out.append("")

    for col in ("family", "schedule", "schedule_variant"):
        t = pd.crosstab(cfg[col], cfg.split, margins=True, margins_name="all")
        t = t[[c for c in ("tune", "holdout", "fresh", "fresh2", "fresh3", "all") if c in t]]
        if col == "family":
            sec = cfg.groupby("family").seconds.sum()
            t["train_minutes"] = [round(sec.get(f, sec.sum()) / 60, 1) for f in t.index]
        table(t)
    table(pd.crosstab(cfg.optimizer, cfg.lr_band, margins=True, margins_name="all"))
    b = behaviour(runs)
    cols = list(BEHAVIOUR_COLS)
    for col in ("family", "schedule", "lr_band", "split"):
        t = b.groupby(col)[cols].mean().astype(float).round(2)
        t.insert(0, "runs", b.groupby(col).size())
        table(t)
    t = b[cols].mean().astype(float).round(3).to_frame("all runs").T
    t.insert(0, "runs", len(b))
    table(t.rename_axis("corpus"))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
