"""The learning-rate plan: stepping copies of torch's schedulers gives the rates the real ones
give, without touching them; the core waits for a decay that matters and stops once decays
stop paying."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as sch

from advisor import Advisor, LrPlan, PlateauRule, Verdict, replay
from advisor.callbacks._lr_plan import plan_schedulers
from advisor.detectors import read_plan
from advisor.detectors.plan import frequent_drops_start

EPOCHS, STEPS_PER_EPOCH = 30, 7


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """transformers' get_cosine_schedule_with_warmup, which builds a LambdaLR from a partial."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _linear_warmup(step: int, warmup: int, total: int) -> float:
    """transformers' get_linear_schedule_with_warmup."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


TOTAL = EPOCHS * STEPS_PER_EPOCH
SCHEDULERS = {  # name: (factory(optimizer), interval)
    "StepLR": (lambda o: sch.StepLR(o, 7, 0.5), "epoch"),
    "MultiStepLR": (lambda o: sch.MultiStepLR(o, [15, 22], 0.1), "epoch"),
    "ExponentialLR": (lambda o: sch.ExponentialLR(o, 0.9), "epoch"),
    "CosineAnnealingLR": (lambda o: sch.CosineAnnealingLR(o, EPOCHS), "epoch"),
    "CosineAnnealingWarmRestarts": (lambda o: sch.CosineAnnealingWarmRestarts(o, 5, 2), "epoch"),
    "LinearLR": (lambda o: sch.LinearLR(o, 1.0, 0.05, total_iters=20), "epoch"),
    "ConstantLR": (lambda o: sch.ConstantLR(o, 0.3, total_iters=10), "epoch"),
    "PolynomialLR": (lambda o: sch.PolynomialLR(o, total_iters=25, power=2.0), "epoch"),
    "LambdaLR": (lambda o: sch.LambdaLR(o, lambda e: 0.95 ** e), "epoch"),
    "MultiplicativeLR": (lambda o: sch.MultiplicativeLR(o, lambda e: 0.9), "epoch"),
    "OneCycleLR": (lambda o: sch.OneCycleLR(o, 0.5, total_steps=TOTAL), "step"),
    "CyclicLR": (lambda o: sch.CyclicLR(o, 0.01, 0.2, step_size_up=20), "step"),
    "SequentialLR": (lambda o: sch.SequentialLR(o, [sch.LinearLR(o, 0.1, total_iters=5),
                                                    sch.CosineAnnealingLR(o, EPOCHS - 5)], [5]),
                     "epoch"),
    "ChainedScheduler": (lambda o: sch.ChainedScheduler([sch.ConstantLR(o, 0.5, total_iters=4),
                                                         sch.ExponentialLR(o, 0.93)]), "epoch"),
    "cosine_with_warmup": (lambda o: sch.LambdaLR(o, functools.partial(
        _warmup_cosine, warmup=20, total=TOTAL)), "step"),
    "linear_with_warmup": (lambda o: sch.LambdaLR(o, functools.partial(
        _linear_warmup, warmup=30, total=TOTAL)), "step"),
}


def _optimizer() -> tuple[torch.optim.Optimizer, torch.nn.Parameter]:
    p = torch.nn.Parameter(torch.ones(3))
    return torch.optim.SGD([p], lr=0.1, momentum=0.9), p


def _real_rates(factory, interval: str, start: int = 0) -> tuple[list[float], object, object]:
    """Step the real optimizer and scheduler as Lightning does; the rate each epoch starts
    with, from epoch ``start`` on (the state after ``start`` epochs is returned too)."""
    opt, p = _optimizer()
    scheduler = factory(opt)
    rates: list[float] = []
    for epoch in range(EPOCHS):
        if epoch == start:
            state = (opt.state_dict(), scheduler.state_dict(), p.detach().clone())
        if epoch >= start:
            rates.append(opt.param_groups[0]["lr"])
        for _ in range(STEPS_PER_EPOCH):
            p.grad = torch.ones_like(p)
            opt.step()
            if interval == "step":
                scheduler.step()
        if interval == "epoch":
            scheduler.step()
    return rates, scheduler, state


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_plan_gives_the_rates_of_the_real_scheduler_and_leaves_it_untouched(name):
    factory, interval = SCHEDULERS[name]
    expected, _, _ = _real_rates(factory, interval)
    opt, p = _optimizer()
    scheduler = factory(opt)
    before = (repr(opt.state_dict()), repr(scheduler.state_dict()), p.detach().clone())
    plan = plan_schedulers(opt, [(scheduler, interval, 1)], start_epoch=0, max_epochs=EPOCHS,
                           steps_per_epoch=STEPS_PER_EPOCH, unit="epoch")
    assert isinstance(plan, LrPlan)
    got = plan.rates_at(np.arange(1, EPOCHS + 1))
    np.testing.assert_allclose(got, expected, rtol=0.006, atol=1e-12)
    # the real optimizer, scheduler and parameter are as they were
    assert repr(opt.state_dict()) == before[0]
    assert repr(scheduler.state_dict()) == before[1]
    assert torch.equal(p.detach(), before[2])
    assert opt.param_groups[0]["params"][0] is p


@pytest.mark.parametrize("name", ["MultiStepLR", "OneCycleLR", "MultiplicativeLR"])
def test_plan_from_a_scheduler_mid_run(name):
    """Planned from a restored mid-run state (a resume), the plan goes on as the real one."""
    factory, interval = SCHEDULERS[name]
    expected, _, (opt_state, sched_state, _) = _real_rates(factory, interval, start=12)
    opt, _ = _optimizer()
    scheduler = factory(opt)
    opt.load_state_dict(opt_state)
    scheduler.load_state_dict(sched_state)
    plan = plan_schedulers(opt, [(scheduler, interval, 1)], start_epoch=12, max_epochs=EPOCHS,
                           steps_per_epoch=STEPS_PER_EPOCH, unit="epoch")
    assert plan.steps[0] == 13
    np.testing.assert_allclose(plan.rates_at(np.arange(13, EPOCHS + 1)), expected, rtol=0.006)


def test_plan_in_steps_and_with_frequency():
    opt, _ = _optimizer()
    scheduler = sch.StepLR(opt, 1, 0.5)
    plan = plan_schedulers(opt, [(scheduler, "step", 10)], start_epoch=0, max_epochs=None,
                           steps_per_epoch=20, unit="step", max_steps=60)
    # stepped after every 10th optimizer step: the rate of steps 1-10, 11-20, ...
    np.testing.assert_allclose(plan.rates_at([1, 10, 11, 21, 60]), [0.1, 0.1, 0.05, 0.025,
                                                                     0.1 * 0.5 ** 5])


def test_reduce_on_plateau_becomes_its_rule():
    opt, _ = _optimizer()
    scheduler = sch.ReduceLROnPlateau(opt, factor=0.2, patience=4, cooldown=1, min_lr=1e-3)
    rule = plan_schedulers(opt, [(scheduler, "epoch", 1)], start_epoch=0, max_epochs=50,
                           steps_per_epoch=5, unit="epoch")
    assert rule == PlateauRule(0.2, 4, 1, 1e-3, scheduler.eps)


# ---------------------------------------------------------------------- the core
def _step_curve(e: np.ndarray, drops=(60, 80), gains=(0.15, 0.05)) -> np.ndarray:
    """A loss that settles in each phase of a step schedule and falls after each drop."""
    y = 0.5 + 0.5 * np.exp(-e / 5)
    for at, gain in zip(drops, gains, strict=True):
        y = y - gain * (1 - np.exp(-np.clip(e - at, 0, None) / 2))
    return y


STEP_PLAN = LrPlan.from_mapping({1: 0.1, 61: 0.01, 81: 0.001}, "MultiStepLR")


def _schedule_evidence(advice):
    return next(ev for ev in advice.evidence if ev.detector == "schedule")


def _run(advisor: Advisor, y: np.ndarray, lr=None) -> tuple[int, object]:
    for e in range(1, y.size + 1):
        metrics = {"val_loss": float(y[e - 1])}
        if lr is not None:
            metrics["lr"] = float(lr[e - 1])
        advice = advisor.update(e, metrics)
        if advice.should_stop:
            return e, advice
    return y.size, advice


def test_a_plateau_before_a_planned_drop_waits_for_it():
    rng = np.random.default_rng(1)
    e = np.arange(1, 101)
    y = _step_curve(e) + rng.normal(0, 0.001, e.size)
    lr = STEP_PLAN.rates_at(e)
    stop, _ = _run(Advisor("val_loss", max_steps=100), y, lr)  # the logged rate only
    assert stop <= 60, "the case must be one the logged rate alone stops before the drop"
    stop, advice = _run(Advisor("val_loss", max_steps=100, lr_plan=STEP_PLAN), y, lr)
    assert stop > 81 and advice.best_step > 81  # the best after the last drop is kept
    advisor = Advisor("val_loss", max_steps=100, lr_plan=STEP_PLAN)
    for i in range(45):
        advice = advisor.update(i + 1, {"val_loss": float(y[i])})
    evidence = _schedule_evidence(advice)
    assert "lowers the rate from 0.1 to 0.01" in evidence.summary and "step 61" in evidence.summary
    assert evidence.details["decay_pending"] is True


def test_decays_that_stop_paying_end_the_wait():
    """The first drop brought nothing: the next one is not waited for."""
    plan = LrPlan.from_mapping({1: 0.1, 41: 0.01, 121: 0.001}, "MultiStepLR")
    e = np.arange(1, 151)
    y = _step_curve(e, drops=(40, 120), gains=(0.0, 0.0)) + np.random.default_rng(2).normal(
        0, 0.001, e.size)
    stop, advice = _run(Advisor("val_loss", max_steps=150, lr_plan=plan), y)
    assert 47 <= stop < 120
    assert advice.verdict is Verdict.PLATEAU
    state = read_plan(plan, e[:stop], y[:stop], tolerance=0.005, max_steps=150)
    assert not state.pending and "brought only" in state.reason
    assert "brought only" in _schedule_evidence(advice).summary
    # had the first drop paid, the advisor would have waited for the second
    paid = _step_curve(e, drops=(40, 120), gains=(0.1, 0.0))
    assert _run(Advisor("val_loss", max_steps=150, lr_plan=plan), paid)[0] > 120


def test_a_decay_whose_gain_is_within_the_noise_of_the_tolerance_still_matters():
    """A drop that brought 0.004 against a 0.005 tolerance, on checks whose noise makes two
    medians of six differ by that much by chance, has not shown that it stopped paying."""
    plan = LrPlan.from_mapping({1: 0.1, 41: 0.01, 121: 0.001}, "MultiStepLR")
    e = np.arange(1.0, 61.0)
    y = np.where(e > 40, 0.496, 0.5)
    quiet = read_plan(plan, e, y, tolerance=0.005, max_steps=150, noise=0.0001)
    assert not quiet.pending and "even with its noise" in quiet.reason
    noisy = read_plan(plan, e, y, tolerance=0.005, max_steps=150, noise=0.002)
    assert noisy.pending and "within the noise" in noisy.reason
    assert noisy.details["gain_margin"] == pytest.approx(1.645 * 0.002 * np.sqrt(np.pi / 6))
    # ReduceLROnPlateau's reductions are read the same way
    rule = PlateauRule(factor=0.1, patience=5)
    lr = np.where(e > 40, 0.01, 0.1)
    assert not read_plan(rule, e, y, tolerance=0.005, max_steps=150, logged_lr=lr,
                         noise=0.0001).pending
    assert read_plan(rule, e, y, tolerance=0.005, max_steps=150, logged_lr=lr,
                     noise=0.002).pending


def test_a_quantized_metric_tied_after_a_decay_has_not_shown_that_decays_stopped_paying():
    """Accuracy on 200 validation samples moves in steps of 0.005. Tied at 0.86 before a decay
    and at 0.865 after it, it shows one quantum of gain, but a level can move by up to a quantum
    without moving a tied check: the decay may have brought up to 0.01, more than the 0.009
    worth training for (a fresh moons run read it as "brought only 0.005", stopped, and missed
    the next decays' 3.9%). Noise that dithers the rounding lets the checks show the change."""
    plan = LrPlan.from_mapping({1: 0.1, 41: 0.01, 121: 0.001}, "MultiStepLR")
    e = np.arange(1.0, 61.0)
    y = -np.where(e > 40, 0.865, 0.86)  # loss-like, as the advisor passes it
    plain = read_plan(plan, e, y, tolerance=0.009, max_steps=150, noise=0.0)
    assert not plain.pending  # read as a continuous metric: 0.005 < 0.009, no decay matters
    tied = read_plan(plan, e, y, tolerance=0.009, max_steps=150, noise=0.005 / np.sqrt(12),
                     resolution=0.005)
    assert tied.pending and "within the noise" in tied.reason
    assert tied.details["gain_margin"] >= 0.005
    dithered = read_plan(plan, e, y, tolerance=0.009, max_steps=150, noise=0.0001,
                         resolution=0.0001 * np.sqrt(12) / 2)
    assert dithered.details["gain_margin"] < 0.001


def test_a_run_stuck_at_chance_waits_while_the_schedule_still_changes_the_rate():
    """Accuracy stuck at chance (the same value at every check) learns only after the last warm
    restart: the advisor waits while a restart or a decay is still planned, and keeps the best
    after it; with nothing planned, a run that never learned is stopped in the second half."""
    e = np.arange(1, 61)
    acc = np.where(e < 50, 1 / 3, 0.9)
    restarts = LrPlan(tuple(e.astype(float)),
                      tuple(0.05 * (1 + np.cos(np.pi * ((e - 1) % 15) / 15))), "restarts")
    stop, advice = _run_acc(Advisor("val_acc", "max", max_steps=60, lr_plan=restarts), acc)
    assert stop == 60 and advice.best_value == pytest.approx(0.9)
    for rate in (0.1, 0.0):  # a constant rate, zero included, holds no decay
        flat = LrPlan.from_mapping({1: rate}, "constant")
        assert flat.ahead(30, 60) == "none"
        stop, advice = _run_acc(Advisor("val_acc", "max", max_steps=60, lr_plan=flat), acc)
        assert 30 <= stop < 50 and advice.should_stop
    waiting = Advisor("val_acc", "max", max_steps=60, lr_plan=restarts)
    _run_acc(waiting, acc[:40])
    advice = waiting.update(41, {"val_acc": 1 / 3})
    assert not advice.should_stop and "schedule still raises the rate again" in advice.reason


def test_a_spike_at_the_peak_of_a_one_cycle_ramp_is_waited_out():
    """The loss triples at the top of a one-cycle ramp and comes back as the rate anneals: not a
    divergence while the rate is still above half its peak; the same jump under a constant rate,
    or one that lasts once the rate has halved, is."""
    e = np.arange(1, 61)
    rate = np.where(e <= 15, 0.004 + 0.096 * (e - 1) / 14,
                    0.05 * (1 + np.cos(np.pi * (e - 15) / 45)))
    onecycle = LrPlan(tuple(e.astype(float)), tuple(rate), "OneCycleLR")
    base = 0.2 + 0.8 * np.exp(-e / 4)
    spike = np.where((e >= 14) & (e <= 19), 1.5, 0.0)
    y = base + spike - 0.05 * (e > 30)
    stop, advice = _run(Advisor("val_loss", max_steps=60, lr_plan=onecycle), y)
    assert advice.best_step > 30 and advice.verdict is not Verdict.DIVERGED
    waiting = Advisor("val_loss", max_steps=60, lr_plan=onecycle)
    _run(waiting, y[:15])
    advice = waiting.update(16, {"val_loss": float(y[15])})
    assert not advice.should_stop and "raised the learning rate" in advice.reason
    constant = LrPlan.from_mapping({1: 0.05}, "constant")
    stop, advice = _run(Advisor("val_loss", max_steps=60, lr_plan=constant), y)
    assert stop == 15 and advice.verdict is Verdict.DIVERGED
    lasting = base + np.where(e >= 14, 1.5, 0.0)  # rate below half its peak from epoch 35
    stop, advice = _run(Advisor("val_loss", max_steps=60, lr_plan=onecycle), lasting)
    assert advice.verdict is Verdict.DIVERGED and 35 <= stop <= 40
    # a warm-up to a constant rate: raised to the end, but no decay will take a spike back
    warmup = LrPlan(tuple(e.astype(float)), tuple(np.minimum(0.1, 0.01 * e)), "LinearLR")
    assert warmup.raised(50) and warmup.ahead(16, 60) == "none"
    stop, advice = _run(Advisor("val_loss", max_steps=60, lr_plan=warmup), y)
    assert stop == 15 and advice.verdict is Verdict.DIVERGED


def _run_acc(advisor: Advisor, acc: np.ndarray) -> tuple[int, object]:
    for e in range(1, acc.size + 1):
        advice = advisor.update(e, {"val_acc": float(acc[e - 1])})
        if advice.should_stop:
            return e, advice
    return acc.size, advice


def test_read_plan_without_a_decay_ahead():
    plan = LrPlan.from_mapping({1: 0.1})  # constant to the end
    state = read_plan(plan, np.arange(1, 31), np.ones(30), tolerance=0.01, max_steps=100)
    assert not state.pending and state.next_step is None


def test_reduce_on_plateau_rule():
    rule = PlateauRule(factor=0.1, patience=5, min_lr=1e-4)
    x = np.arange(1.0, 41.0)
    flat = np.full(40, 0.5)
    # no reduction yet: the scheduler will answer the plateau
    assert read_plan(rule, x, flat, tolerance=0.01, max_steps=100,
                     logged_lr=np.full(40, 0.1)).pending
    # the last reduction (after epoch 20) brought more than the tolerance: wait for the next
    lr = np.where(x > 20, 0.01, 0.1)
    helped = np.where(x > 20, 0.4, 0.5)
    assert read_plan(rule, x, helped, tolerance=0.01, max_steps=100, logged_lr=lr).pending
    # it brought nothing in more than patience checks: reductions have stopped paying
    state = read_plan(rule, x, flat, tolerance=0.01, max_steps=100, logged_lr=lr)
    assert not state.pending and "stopped paying" in state.reason
    # the rate sits at min_lr: no reduction is left
    state = read_plan(rule, x, helped, tolerance=0.01, max_steps=100,
                      logged_lr=np.where(x > 20, 1e-4, 0.1))
    assert not state.pending and "min_lr" in state.reason
    # fewer checks left than the scheduler's patience: no reduction can come
    assert not read_plan(rule, x, flat, tolerance=0.01, max_steps=43,
                         logged_lr=np.full(40, 0.1)).pending


def _reduce_on_plateau_run(values: np.ndarray, patience: int,
                           planned: bool = True) -> tuple[int, object]:
    """Replay ``values`` (val_loss per epoch) through the advisor as the callback does, with the
    rate a real ``ReduceLROnPlateau(factor=0.5)`` stepped on the same values gives each epoch
    (and its rule as the plan, unless not ``planned``: a replay of the logged rate alone)."""
    opt, _ = _optimizer()
    scheduler = sch.ReduceLROnPlateau(opt, factor=0.5, patience=patience)
    rule = plan_schedulers(opt, [(scheduler, "epoch", 1)], start_epoch=0,
                           max_epochs=values.size, steps_per_epoch=1, unit="epoch")
    advisor = Advisor("val_loss", max_steps=values.size, lr_plan=rule if planned else None)
    for e, v in enumerate(values, 1):
        advice = advisor.update(e, {"val_loss": float(v), "lr": opt.param_groups[0]["lr"]})
        if advice.should_stop:
            return e, advice
        scheduler.step(float(v))
    return values.size, advice


def test_reductions_every_few_checks_that_stopped_paying_end_a_flat_run():
    """ReduceLROnPlateau with a patience shorter than the plateau window halves the rate every
    six checks of a flat curve. Each reduction started a new phase too short to test, so a run
    flat from epoch 30 was never stopped, however many reductions brought nothing. Reductions
    that stopped paying changed the rate, not the curve: the phase runs from before them, and
    the run stops with the reason naming them. One that pays is still waited for."""
    e = np.arange(1, 201)
    flat = np.where(e < 30, 1 / np.sqrt(e), 1 / np.sqrt(30))
    flat = flat + np.random.default_rng(0).normal(0, 0.0005, e.size) * (e >= 30)
    stop, advice = _reduce_on_plateau_run(flat, patience=5)
    assert advice.should_stop and advice.verdict is Verdict.PLATEAU and stop < 150
    plan = next(ev for ev in advice.evidence if ev.detector == "schedule")
    assert "stopped paying" in plan.summary
    # the rule's reading: the latest reduction judged (six checks after it) is the one before
    # a reduction too recent to judge; the flat stretch reaches back over every reduction that,
    # with all since, brought less than the tolerance
    x = np.arange(1.0, 41.0)
    lr = 0.1 * 0.5 ** np.searchsorted([12, 18, 24, 30, 36], x, side="left")
    level = np.where(x <= 12, 0.6, 0.5)  # the first reduction paid, the later ones did not
    rule = PlateauRule(factor=0.5, patience=5)
    state = read_plan(rule, x, level, tolerance=0.004, max_steps=100, logged_lr=lr)
    assert not state.pending and state.last_decay_step == 30.0
    assert state.details["later_reductions"] == 1 and state.details["flat_since"] == 18.0
    paid = read_plan(rule, x, np.where(x <= 30, 0.6, 0.5), tolerance=0.004, max_steps=100,
                     logged_lr=lr)
    assert paid.pending and paid.last_decay_step == 30.0


def test_frequent_drops_of_a_logged_rate_that_changed_nothing_are_one_phase():
    """Without a plan, the logged rate's drops start phases; ReduceLROnPlateau with a short
    patience drops it every six flat checks, so no phase was long enough to test and the flat
    run went on until the reductions ended. Drops that come too often for a phase to be
    tested and changed nothing are merged; a step schedule's drops, with long phases between
    them, are not."""
    e = np.arange(1, 201)
    flat = np.where(e < 30, 1 / np.sqrt(e), 1 / np.sqrt(30))
    flat = flat + np.random.default_rng(0).normal(0, 0.0001, e.size) * (e >= 30)
    stop, advice = _reduce_on_plateau_run(flat, patience=5, planned=False)
    # before, it stopped only once torch's eps ended the reductions (epoch 161)
    assert advice.should_stop and advice.verdict is Verdict.PLATEAU and stop < 120
    # the reading itself (indices of the checks): drops every six checks after a long flat
    # phase are one phase from the first of them; a step schedule's long phases are left
    # alone; a drop that paid ends the walk
    x = np.arange(1.0, 61.0)
    starts, ratios = [20, 26, 32, 38, 44, 50], [0.5] * 6
    level = np.where(x < 20, 0.6, 0.5)
    assert frequent_drops_start(x, level, starts, ratios, tolerance=0.004, k=6,
                                shortest=8) == 20
    assert frequent_drops_start(x, level, [20, 40], [0.1, 0.1], tolerance=0.004, k=6,
                                shortest=8) == 40
    # a drop too recent to judge joins the phase before it only if the drop before it did
    # not pay: here the one after check 50 paid, and the latest (after 56) waits on its own
    assert frequent_drops_start(x, np.where(x <= 50, 0.6, 0.5), [*starts, 56], [0.5] * 7,
                                tolerance=0.004, k=6, shortest=8) == 56
    paying = np.where(x <= 50, 0.6, 0.5)
    assert frequent_drops_start(x, paying, starts, ratios, tolerance=0.004, k=6,
                                shortest=8) == 50


def test_a_constant_logged_rate_is_an_unknown_schedule():
    """Logging a rate that has not changed must not make the advisor bolder than logging
    none: before min_progress_without_lr of the budget, a plateau is not a stop."""
    y = 0.3 + np.exp(-np.arange(1, 101) / 4)
    for lr in (None, np.full(100, 0.1)):
        stop, _ = _run(Advisor("val_loss", max_steps=100), y, lr)
        assert stop >= 50
    stop, advice = _run(Advisor("val_loss", max_steps=100, lr_plan={1: 0.1}), y)
    assert stop < 50 and advice.verdict is Verdict.PLATEAU  # a constant plan is known


def test_plan_travels_with_the_state_and_old_states_load():
    advisor = Advisor("val_loss", max_steps=100, lr_plan=STEP_PLAN)
    for e in range(1, 20):
        advisor.update(e, {"val_loss": 1.0 / e})
    state = advisor.state_dict()
    restored = Advisor("val_loss", max_steps=100)
    restored.load_state_dict(state)
    assert restored.lr_plan == STEP_PLAN
    assert restored.advice.reason == advisor.advice.reason
    old = dict(state, version=1)
    old.pop("lr_plan")
    again = Advisor("val_loss", max_steps=100)
    again.load_state_dict(old)
    assert again.lr_plan is None
    with pytest.raises(ValueError, match="state version 7"):
        again.load_state_dict(dict(state, version=7))


def test_bad_plans_are_refused_with_the_value():
    with pytest.raises(ValueError, match="negative"):
        LrPlan((1.0, 2.0), (0.1, -0.1))
    with pytest.raises(ValueError, match="strictly increasing"):
        LrPlan((2.0, 1.0), (0.1, 0.1))
    with pytest.raises(TypeError, match="lr_plan must be"):
        Advisor("val_loss", lr_plan=[0.1, 0.01])
    with pytest.raises(ValueError, match="factor must be in"):
        PlateauRule(factor=2.0, patience=3)


def test_replay_reads_planned_lr_as_the_plan():
    rng = np.random.default_rng(1)
    e = np.arange(1, 101)
    y = _step_curve(e) + rng.normal(0, 0.001, e.size)
    frame = {"epoch": e, "val_loss": y, "lr": STEP_PLAN.rates_at(e)}
    import pandas as pd

    without = replay(pd.DataFrame(frame), monitor="val_loss").iloc[0]
    with_plan = replay(pd.DataFrame(dict(frame, planned_lr=STEP_PLAN.rates_at(e))),
                       monitor="val_loss").iloc[0]
    assert without["stop_epoch"] <= 60
    assert with_plan["stop_epoch"] > 81
    # a plan logged to the budget by a run that stopped early does not stretch the run
    cut = pd.DataFrame(frame).iloc[:60].merge(
        pd.DataFrame({"epoch": e, "planned_lr": STEP_PLAN.rates_at(e)}), how="outer")
    row = replay(cut, monitor="val_loss").iloc[0]
    assert row["last_epoch"] == 60 and not row["stopped"]



def _overfit_then_drop(slow: float) -> tuple[np.ndarray, np.ndarray]:
    """Validation falls to its best at epoch 25, rises by 0.0072 (1.4% of the best) over
    twelve epochs, then by ``slow`` per epoch while training keeps falling; the drop of the
    rate at epoch 61 takes it to 0.47, 6% below its best before."""
    e = np.arange(1, 101, dtype=float)
    val = 0.5 + 0.5 * (np.exp(-(np.minimum(e, 25) - 1) / 8) - np.exp(-3))
    up = np.clip(e - 25, 0, None)
    val = val + 0.0006 * np.minimum(up, 12) + slow * np.clip(up - 12, 0, None)
    val = np.where(e > 60, 0.47 + 0.03 * np.exp(-(e - 61) / 3), val)
    val = val + np.random.default_rng(3).normal(0, 0.0005, e.size)
    return val, 1.0 * np.exp(-e / 20)


def _run_overfit(plan: LrPlan, val: np.ndarray, train: np.ndarray,
                 until: int = 100) -> tuple[int, object]:
    advisor = Advisor("val_loss", train_metric="train_loss", max_steps=100, lr_plan=plan)
    for e in range(1, until + 1):
        advice = advisor.update(e, {"val_loss": float(val[e - 1]),
                                    "train_loss": float(train[e - 1])})
        if advice.should_stop:
            return e, advice
    return until, advice


def test_a_small_rise_before_a_planned_drop_waits_for_it():
    """Validation rises by less than twice the tolerance (1% of the best) while training falls:
    overfitting by the test, but the plan lowers the rate x0.1 at epoch 61, and a lower rate
    often takes such a rise back. A rise past twice the tolerance stops whatever is ahead."""
    val, train = _overfit_then_drop(0.00008)
    constant = LrPlan.from_mapping({1: 0.1}, "constant")
    stop, advice = _run_overfit(constant, val, train)
    assert stop < 61 and advice.verdict is Verdict.OVERFITTING, "must be an overfitting stop"
    stop, advice = _run_overfit(STEP_PLAN, val, train)
    assert stop > 61 and advice.best_step > 61  # the best after the drop is kept
    _, advice = _run_overfit(STEP_PLAN, val, train, until=50)
    assert advice.evidence_for("overfitting").details["overfitting"]
    assert "no more than twice the" in advice.reason and "step 61" in advice.reason
    val, train = _overfit_then_drop(0.0005)
    stop, advice = _run_overfit(STEP_PLAN, val, train)
    assert stop < 61 and advice.verdict is Verdict.OVERFITTING
