"""Read the trainer's learning-rate schedulers into a plan: the rate of every future check.

The plan is computed by stepping *copies* of the schedulers whose optimizer is a stand-in that
holds only the param groups' hyperparameters (``lr``, ``momentum``, ``betas``, ...), exactly as
Lightning steps the real ones: ``interval="epoch"`` schedulers after every ``frequency``-th
epoch, ``interval="step"`` ones after every ``frequency``-th optimizer step. The real optimizer,
its parameters and the real schedulers are never touched (the deep copy maps the optimizer to
the stand-in and every parameter to itself, so nothing holding a parameter is copied).
``ReduceLROnPlateau`` has no fixed future: it becomes a :class:`~advisor.PlateauRule`.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

from ..detectors.plan import LrPlan, PlateauRule

__all__ = ["plan_from_trainer", "plan_schedulers"]

#: a plan point is kept when the rate moved by more than this share since the last point kept
_RESOLUTION = 0.005
#: the most optimizer steps stepped ahead (a larger budget is planned up to here)
_MAX_STEPS = 1_000_000


class _StandIn:
    """What a scheduler sees of an optimizer: its param groups' hyperparameters, no tensors."""

    def __init__(self, optimizer: Any) -> None:
        self.param_groups = [{k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
                             | {"params": []} for group in optimizer.param_groups]
        self.defaults = dict(getattr(optimizer, "defaults", {}))
        self.state: dict[Any, Any] = {}
        self._opt_called = True

        def step(*args: Any, **kwargs: Any) -> None:
            return None

        step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]  # torch's order check
        self.step = step


def _rate(group: dict[str, Any]) -> float:
    return float(group["lr"])  # a tensor lr too


def plan_schedulers(optimizer: Any, configs: list[tuple[Any, str, int]], *, start_epoch: int,
                    max_epochs: float | None, steps_per_epoch: int, unit: str,
                    start_step: int = 0, max_steps: float | None = None,
                    param_group: int = 0) -> LrPlan | PlateauRule:
    """The plan of ``optimizer``'s ``param_group`` under ``configs`` (``(scheduler, interval,
    frequency)`` in the order Lightning steps them).

    With ``unit="epoch"`` the plan's steps are the 1-based epochs ``start_epoch + 1`` to
    ``max_epochs`` and each rate is the one the epoch starts with; with ``unit="step"`` they
    are the optimizer steps ``start_step + 1`` to ``max_steps`` (the rate each step uses).
    Raises whatever stepping a copy raises (the caller turns it into a warning).
    """
    for scheduler, _, _ in configs:
        if type(scheduler).__name__ == "ReduceLROnPlateau":
            min_lrs = getattr(scheduler, "min_lrs", [0.0])
            return PlateauRule(float(scheduler.factor), int(scheduler.patience),
                               int(scheduler.cooldown),
                               float(min_lrs[min(param_group, len(min_lrs) - 1)]),
                               float(scheduler.eps))
    stand_in = _StandIn(optimizer)
    memo: dict[int, Any] = {id(optimizer): stand_in}
    for group in optimizer.param_groups:
        for p in group["params"]:
            memo[id(p)] = p  # never copy a parameter
    copies = copy.deepcopy([s for s, _, _ in configs], memo)
    names = "+".join(dict.fromkeys(type(s).__name__ for s, _, _ in configs)) or "constant"
    group = stand_in.param_groups[param_group]
    steps: list[float] = []
    rates: list[float] = []

    def keep(at: float) -> None:
        rate = _rate(group)
        if not rates or abs(rate - rates[-1]) > _RESOLUTION * abs(rates[-1]) or (
                rate != rates[-1] and rates[-1] == 0):
            steps.append(float(at))
            rates.append(rate)

    by_step = [(c, f) for c, (_, i, f) in zip(copies, configs, strict=True) if i == "step"]
    by_epoch = [(c, f) for c, (_, i, f) in zip(copies, configs, strict=True) if i != "step"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if unit == "epoch":
            end = int(min(max_epochs if max_epochs is not None else start_epoch + 1,
                          start_epoch + _MAX_STEPS))
            for epoch in range(start_epoch, end):  # 0-based, as Lightning counts
                keep(epoch + 1)
                if by_step:
                    for batch in range(steps_per_epoch):
                        for sched, freq in by_step:
                            if (batch + 1) % freq == 0:
                                sched.step()
                for sched, freq in by_epoch:
                    if (epoch + 1) % freq == 0:
                        sched.step()
        else:
            end = int(min(max_steps if max_steps is not None else start_step + 1,
                          start_step + _MAX_STEPS))
            per_epoch = max(1, steps_per_epoch)
            for step in range(start_step, end):  # ``step`` optimizer steps done so far
                keep(step + 1)
                batch = step % per_epoch
                for sched, freq in by_step:
                    if (batch + 1) % freq == 0:
                        sched.step()
                if batch == per_epoch - 1:
                    epoch = step // per_epoch
                    for sched, freq in by_epoch:
                        if (epoch + 1) % freq == 0:
                            sched.step()
    first = float(start_epoch + 1 if unit == "epoch" else start_step + 1)
    if not steps:  # an empty range: the budget is used up
        steps, rates = [first], [_rate(group)]
    return LrPlan(tuple(steps), tuple(rates), names)


def plan_from_trainer(trainer: Any, unit: str, budget: float | None,
                      param_group: int = 0) -> LrPlan | PlateauRule:
    """The plan of the trainer's first optimizer (its ``param_group``), from the current epoch
    or step to the budget. With no scheduler the plan is the current rate, held to the end."""
    optimizers = getattr(trainer, "optimizers", None) or []
    if not optimizers:
        raise ValueError("the trainer has no optimizer")
    optimizer = optimizers[0]
    if not 0 <= param_group < len(optimizer.param_groups):
        raise ValueError(f"param_group {param_group} does not exist: the optimizer has "
                         f"{len(optimizer.param_groups)} param group(s).")
    configs = [(c.scheduler, c.interval, max(1, int(c.frequency or 1)))
               for c in (getattr(trainer, "lr_scheduler_configs", None) or [])
               if getattr(c.scheduler, "optimizer", None) is optimizer]
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    batches = getattr(trainer, "num_training_batches", math.inf)
    if isinstance(batches, int | float) and math.isfinite(batches) and batches > 0:
        steps_per_epoch = max(1, math.ceil(batches / accumulate))
    else:
        max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else 1
        steps_per_epoch = max(1, int(trainer.estimated_stepping_batches // max_epochs))
    return plan_schedulers(
        optimizer, configs, start_epoch=int(trainer.current_epoch),
        max_epochs=budget if unit == "epoch" else None, steps_per_epoch=steps_per_epoch,
        unit=unit, start_step=int(trainer.global_step),
        max_steps=budget if unit == "step" else None, param_group=param_group)
