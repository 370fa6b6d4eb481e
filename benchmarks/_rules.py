"""Anchor stopping rules, hindsight oracles and the regret of a stop.

Every online rule sees one evaluation at a time through ``update(step, value, train) -> bool``
(``True`` = stop after this evaluation) and never looks ahead. Values may be NaN (missing or
diverged); each rule treats NaN exactly as its original does (noted per rule). Restore-best
semantics: the value kept after a stop at evaluation ``i`` is the best value in ``values[:i]``.

Sources of the rules:

- :class:`LightningEarlyStopping` is the real ``pytorch_lightning.callbacks.EarlyStopping``
  (min_delta=0, check_finite=True), driven through ``_evaluate_stopping_criteria``, the method
  its ``_run_early_stopping_check`` calls after every validation with
  ``trainer.callback_metrics[monitor]`` (a float32 tensor, as ``self.log`` stores a Python float).
- :class:`GeneralizationLoss`, :class:`ProgressQuotient`, :class:`UpStrips`: L. Prechelt, "Early
  Stopping -- But When?", in Neural Networks: Tricks of the Trade, LNCS 1524, 1998 (criteria GL_a,
  PQ_a and UP_s, training strips of k=5 evaluations). Defined on positive errors in min mode.
- :class:`TrialPlateau`: a line-by-line port of Ray Tune's ``ray.tune.stopper.TrialPlateauStopper``
  (``python/ray/tune/stopper/trial_plateau.py``) with its defaults and ``metric_threshold=None``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

__all__ = [
    "ANCHOR_NAMES",
    "GeneralizationLoss",
    "LightningEarlyStopping",
    "OnlineRule",
    "ProgressQuotient",
    "TrialPlateau",
    "UpStrips",
    "anchor_rules",
    "kept_best",
    "oracle_best_index",
    "oracle_within_index",
    "relative_regret",
]

ES_PATIENCES = (3, 5, 10, 20)
GL_ALPHAS = (2.0, 5.0)
PQ_ALPHAS = (1.0, 3.0)
UP_STRIPS = (2, 3)
STRIP = 5


class OnlineRule(Protocol):
    """A stopping rule replayed one evaluation at a time."""

    def update(self, step: float, value: float, train: float) -> bool:
        """Take the evaluation at ``step``; return True to stop after it."""
        ...


class LightningEarlyStopping:
    """Lightning's ``EarlyStopping(monitor, mode, patience)`` (the real class, min_delta=0).

    Stops after ``patience`` evaluations without a strict improvement of the best value, and at
    once on a non-finite value (``check_finite=True``: a NaN or inf monitor stops training).
    """

    def __init__(self, monitor: str, mode: str, patience: int) -> None:
        import torch
        from pytorch_lightning.callbacks import EarlyStopping

        self._tensor = torch.tensor
        self._es = EarlyStopping(monitor=monitor, mode=mode, patience=patience)

    def update(self, step: float, value: float, train: float) -> bool:
        should_stop, _reason = self._es._evaluate_stopping_criteria(self._tensor(float(value)))
        return bool(should_stop)


def _as_error(value: float, scale: float | None) -> float:
    return value if scale is None else 1.0 - value / scale


class GeneralizationLoss:
    """Prechelt's GL_alpha: stop at the first t with GL(t) = 100 * (E_va(t) / E_opt(t) - 1) > alpha.

    E_opt(t) is the lowest validation error up to t. Checked at every evaluation. NaN errors are
    skipped (the formula is never true for them), so a diverged run is not stopped by NaN.
    ``scale`` maps a max-mode metric in [0, scale] to the error ``1 - value/scale``.
    """

    def __init__(self, alpha: float, scale: float | None = None) -> None:
        self.alpha, self.scale, self.opt = alpha, scale, math.inf

    def gl(self, error: float) -> float:
        if not math.isfinite(error):
            return math.nan
        self.opt = min(self.opt, error)
        return 100.0 * (error / self.opt - 1.0) if self.opt > 0 else math.nan

    def update(self, step: float, value: float, train: float) -> bool:
        return self.gl(_as_error(value, self.scale)) > self.alpha


class ProgressQuotient:
    """Prechelt's PQ_alpha: stop at the first end of a strip with GL(t) / P_k(t) > alpha.

    Training progress over the strip of the last k evaluations:
    P_k(t) = 1000 * (sum(E_tr[t-k+1..t]) / (k * min(E_tr[t-k+1..t])) - 1). Checked only at the end
    of each strip (evaluations k, 2k, ...); needs the train metric. A strip with a NaN train value
    (or a NaN validation value) is not evaluated.
    """

    def __init__(self, alpha: float, k: int = STRIP, scale: float | None = None) -> None:
        self.alpha, self.k, self.scale = alpha, k, scale
        self._gl = GeneralizationLoss(0.0, scale)
        self._train: deque[float] = deque(maxlen=k)
        self.t = 0

    def update(self, step: float, value: float, train: float) -> bool:
        self.t += 1
        gl = self._gl.gl(_as_error(value, self.scale))
        self._train.append(_as_error(train, self.scale))
        if self.t % self.k or len(self._train) < self.k or not math.isfinite(gl):
            return False
        strip = np.asarray(self._train)
        lo = strip.min()
        if not np.isfinite(strip).all() or lo <= 0:
            return False
        progress = 1000.0 * (strip.sum() / (self.k * lo) - 1.0)
        if progress <= 0:
            return gl > 0  # no training progress at all: GL/P is +inf as soon as GL > 0
        return gl / progress > self.alpha


class UpStrips:
    """Prechelt's UP_s: stop when the validation error at the end of a strip (every k evaluations)
    was higher than at the end of the previous strip for s successive strips.

    A NaN at a strip end compares False and restarts the count.
    """

    def __init__(self, s: int, k: int = STRIP, scale: float | None = None) -> None:
        self.s, self.k, self.scale = s, k, scale
        self.t, self.prev, self.ups = 0, math.nan, 0

    def update(self, step: float, value: float, train: float) -> bool:
        self.t += 1
        if self.t % self.k:
            return False
        error = _as_error(value, self.scale)
        self.ups = self.ups + 1 if error > self.prev else 0
        self.prev = error
        return self.ups >= self.s


class TrialPlateau:
    """Ray Tune's ``TrialPlateauStopper`` (defaults std=0.01, num_results=4, grace_period=4).

    Stops once the iteration count reaches ``grace_period`` and the (population) standard deviation
    of the last ``num_results`` values is below ``std``. Not scale-free: ``std`` is in the metric's
    own units. A NaN in the window makes the std NaN, which never stops (as in Ray).
    """

    def __init__(self, std: float = 0.01, num_results: int = 4, grace_period: int = 4) -> None:
        self.std, self.num_results, self.grace_period = std, num_results, grace_period
        self.iter = 0
        self.results: deque[float] = deque(maxlen=num_results)

    def update(self, step: float, value: float, train: float) -> bool:
        self.results.append(value)
        self.iter += 1
        if self.iter < self.grace_period or len(self.results) < self.num_results:
            return False
        return bool(np.std(self.results) < self.std)


RuleFactory = Callable[[str, str, float | None], OnlineRule]


def _anchor_factories() -> dict[str, RuleFactory]:
    """name -> factory(monitor, mode, error_scale). Prechelt rules need min mode or a scale."""
    out: dict[str, RuleFactory] = {}
    for p in ES_PATIENCES:
        out[f"es_p{p}"] = lambda m, mode, sc, p=p: LightningEarlyStopping(m, mode, p)
    for a in GL_ALPHAS:
        out[f"GL{a:g}"] = lambda m, mode, sc, a=a: GeneralizationLoss(a, sc)
    for a in PQ_ALPHAS:
        out[f"PQ{a:g}"] = lambda m, mode, sc, a=a: ProgressQuotient(a, STRIP, sc)
    for s in UP_STRIPS:
        out[f"UP{s}"] = lambda m, mode, sc, s=s: UpStrips(s, STRIP, sc)
    out["plateau"] = lambda m, mode, sc: TrialPlateau()
    return out


_FACTORIES = _anchor_factories()
ANCHOR_NAMES: tuple[str, ...] = tuple(_FACTORIES)
PRECHELT = tuple(n for n in ANCHOR_NAMES if n[:2] in ("GL", "PQ", "UP"))


def anchor_rules(monitor: str, mode: str, error_scale: float | None) -> dict[str, OnlineRule]:
    """Fresh instances of every anchor rule for one run (Prechelt's only where defined)."""
    rules = {}
    for name, make in _FACTORIES.items():
        if name in PRECHELT and mode == "max" and error_scale is None:
            continue
        rules[name] = make(monitor, mode, error_scale)
    return rules


def _best_so_far(values: np.ndarray, mode: str) -> np.ndarray:
    v = np.where(np.isfinite(values), values, np.inf if mode == "min" else -np.inf)
    return np.minimum.accumulate(v) if mode == "min" else np.maximum.accumulate(v)


def kept_best(values: np.ndarray, stop: int, mode: str) -> float:
    """Best finite value in the first ``stop`` evaluations (restore-best); NaN if there is none."""
    head = values[:stop]
    head = head[np.isfinite(head)]
    if head.size == 0:
        return math.nan
    return float(head.min() if mode == "min" else head.max())


def relative_regret(kept: float, best: float, mode: str) -> float:
    """(kept - best)/|best| (min mode) or (best - kept)/|best| (max); inf if nothing was kept."""
    if not math.isfinite(kept):
        return math.inf
    gap = kept - best if mode == "min" else best - kept
    return max(gap, 0.0) / max(abs(best), 1e-12)


def oracle_best_index(values: np.ndarray, mode: str) -> int:
    """1-based index of the first evaluation holding the run's best finite value (hindsight)."""
    bsf = _best_so_far(values, mode)
    return int(np.argmax(bsf == bsf[-1])) + 1


def oracle_within_index(values: np.ndarray, mode: str, tol: float = 0.01) -> int:
    """1-based index of the earliest evaluation whose best-so-far has relative regret <= ``tol``."""
    bsf = _best_so_far(values, mode)
    best = bsf[-1]
    regret = (bsf - best if mode == "min" else best - bsf) / max(abs(best), 1e-12)
    return int(np.argmax(regret <= tol)) + 1
