"""The Advisor end to end: verdicts, stops, evidence, forecast, history rules, state."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import feed, first_stop

from advisor import Advice, Advisor, AdvisorWarning, MetricNotFoundError, Verdict

# ---------------------------------------------------------------------------- plateau / improving


def test_saturating_curve_stops_with_a_plateau_before_the_budget(saturating_curve):
    advices = feed(Advisor("val_loss", "min", max_steps=60), saturating_curve, stop=True)
    stop = advices[-1]
    assert stop.should_stop
    assert stop.verdict is Verdict.PLATEAU
    assert stop.step < 60
    assert "val_loss" in stop.reason
    plateau = stop.evidence_for("plateau")
    assert plateau is not None
    assert plateau.pvalue is not None and 0.0 <= plateau.pvalue <= 1.0
    assert plateau.window is not None
    assert plateau.window[0] < plateau.window[1] == stop.step
    assert stop.suggested_stop_step is not None
    assert stop.suggested_stop_step <= stop.step
    seen = saturating_curve[: len(advices)]
    assert stop.best_value == pytest.approx(seen.min())
    assert stop.best_step == float(np.argmin(seen) + 1)


def test_saturating_curve_is_improving_before_it_plateaus(saturating_curve):
    advices = feed(Advisor(max_steps=60), saturating_curve, stop=True)
    verdicts = [a.verdict for a in advices]
    assert Verdict.IMPROVING in verdicts
    assert verdicts.index(Verdict.IMPROVING) < len(verdicts) - 1


def test_still_improving_curve_is_not_stopped_early():
    rng = np.random.default_rng(0)
    e = np.arange(1, 101, dtype=float)
    y = 1 / np.sqrt(e) + rng.normal(0, 0.002, e.size)
    advices = feed(Advisor(max_steps=1000), y)
    assert not any(a.should_stop for a in advices)
    assert sum(a.verdict is Verdict.IMPROVING for a in advices) > 50
    assert advices[-1].suggested_stop_step is None


def test_constant_curve_is_eventually_a_plateau_and_never_crashes():
    advices = feed(Advisor(max_steps=200), np.full(140, 0.5))
    assert all(isinstance(a, Advice) for a in advices)
    assert not any(a.verdict is Verdict.IMPROVING for a in advices)
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert stop.best_value == 0.5
    # no learning rate logged: a plateau in the first half of the budget is not a stop, and
    # the advice says why
    assert stop.step >= 100
    early = advices[59]
    assert early.verdict is Verdict.UNDECIDED and "schedule is unknown" in early.reason


def test_constant_curve_with_a_constant_learning_rate_stops_early_only_with_a_plan():
    # a run that learned, then went flat, under a planned constant rate (no scheduler): known,
    # so the plateau is a stop early in the budget
    y = 0.3 + np.exp(-np.arange(1, 41) / 3)
    advices = feed(Advisor(max_steps=200, lr_plan={1: 1e-3}), y, extra={"lr": np.full(40, 1e-3)})
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU and stop.step < 40
    # a logged rate that has not changed yet says nothing of the decays ahead: no early stop
    advices = feed(Advisor(max_steps=200), y, extra={"lr": np.full(40, 1e-3)})
    assert first_stop(advices) is None
    assert "schedule is unknown" in advices[-1].reason
    # nor for a run that has not learned anything yet: many sit at their initial level first
    flat = feed(Advisor(max_steps=200, lr_plan={1: 1e-3}), np.full(40, 0.5))
    assert first_stop(flat) is None and "not improved by more than" in flat[-1].reason


def test_validation_every_other_epoch_with_training_logged_every_epoch():
    e = np.arange(1, 121)
    val = 0.3 + np.exp(-e / 8)
    advisor = Advisor(max_steps=120, train_metric="train_loss")
    stop = None
    for step in e:
        metrics = {"train_loss": 1 / step}
        if step % 2 == 0:
            metrics["val_loss"] = val[step - 1]
        elif step == 1:
            continue  # validation has not run yet
        advice = advisor.update(step, metrics)
        assert advice.step % 2 == 0  # about the latest validation check
        if advice.should_stop:
            stop = advice
            break
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert stop.best_step % 2 == 0


def test_gaps_in_the_steps_are_accepted():
    steps = np.r_[np.arange(1, 20), np.arange(40, 121, 3)].astype(float)
    y = 0.3 + np.exp(-steps / 10)
    advices = feed(Advisor(max_steps=120), y, steps=steps)
    assert [a.step for a in advices] == steps.tolist()
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert stop.step > 40


def test_a_loss_that_stops_changing_exactly_is_a_plateau_soon_after():
    # a network whose loss is the same to the last digit from check 5 on (a dead network, a
    # rate of zero): flat, not a drift its rounding might hide
    values = [1.0, 0.6173, 0.4519, 0.3388] + [0.2845] * 146
    adv = Advisor("val_loss", max_steps=150, lr_plan={1: 0.05})
    stop = first_stop(feed(adv, values, stop=True))
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert stop.step <= 15
    assert "moves in steps" not in stop.reason


def test_plateau_confirmation_counts_new_checks_not_updates_of_other_metrics():
    """Logging a training metric between validations must not confirm a plateau sooner."""
    rng = np.random.default_rng(0)
    e = np.arange(1, 121)
    val = 0.3 + np.exp(-e / 8) + rng.normal(0, 0.0003, e.size)
    val_only, with_train = Advisor(max_steps=120), Advisor(max_steps=120)
    stop_val_only = stop_with_train = None
    for step in e[1:]:
        if step % 2 == 0:
            a = val_only.update(step, {"val_loss": val[step - 1]})
            if a.should_stop and stop_val_only is None:
                stop_val_only = step
            b = with_train.update(step, {"val_loss": val[step - 1], "train_loss": 1.0})
        else:
            b = with_train.update(step, {"train_loss": 1.0})
        if b.should_stop and stop_with_train is None:
            stop_with_train = step
    assert stop_val_only is not None
    assert stop_with_train == stop_val_only


# ---------------------------------------------------------------------------- early / divergence


def test_short_history_is_undecided_and_never_a_stop():
    for values in (np.full(5, 0.5), np.linspace(1.0, 0.1, 5), np.linspace(0.1, 5.0, 5)):
        advisor = Advisor(min_checks=6, max_steps=10)
        advices = feed(advisor, values)
        assert all(a.verdict is Verdict.UNDECIDED for a in advices)
        assert not any(a.should_stop for a in advices)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_monitor_value_is_a_divergence_even_early(bad):
    advices = feed(Advisor(max_steps=100), [1.0, 0.9, bad])
    last = advices[-1]
    assert last.verdict is Verdict.DIVERGED
    assert last.should_stop
    assert last.best_step == 2.0 and last.best_value == 0.9
    assert last.suggested_stop_step == 2.0
    assert last.evidence_for("divergence").details["kind"] == "non-finite"


def test_monitor_never_finite_is_a_divergence():
    advice = Advisor().update(1, {"val_loss": math.nan})
    assert advice.verdict is Verdict.DIVERGED and advice.should_stop


def test_blow_up_for_two_checks_is_a_divergence():
    y = list(0.3 + np.exp(-np.arange(1, 21) / 4)) + [1e6, 1e6]
    advices = feed(Advisor(max_steps=100, min_checks=3), y, stop=True)
    last = advices[-1]
    assert last.verdict is Verdict.DIVERGED
    assert last.step == 22.0
    assert last.evidence_for("divergence").details["kind"] == "blow-up"


def test_single_spike_does_not_stop_a_run():
    rng = np.random.default_rng(1)
    e = np.arange(1, 31)
    y = 1 / np.sqrt(e) + rng.normal(0, 0.002, e.size)
    y[20] = 1e6
    advices = feed(Advisor(max_steps=1000), y)
    assert advices[20].verdict is not Verdict.DIVERGED
    assert not advices[21].should_stop


def test_a_curve_still_falling_significantly_is_not_a_plateau_on_the_deceleration_model():
    # a steady fall of 0.15% of the value per epoch in a 30-epoch budget: the deceleration model
    # expects less than the 1% tolerance from the rest well before the end, but the curve shows
    # no sign of slowing; it may stop only once even its straight continuation to the budget
    # gains less than the tolerance
    rng = np.random.default_rng(3)
    y = 1.0 - 0.0015 * np.arange(1, 31) + rng.normal(0, 1e-5, 30)
    advices = feed(Advisor(max_steps=30, lr_plan={1: 1e-3}), y, extra={"lr": np.full(30, 1e-3)})
    stop = first_stop(advices)
    if stop is not None:
        assert 0.0015 * (30 - stop.step) < 0.01 * y[int(stop.step) - 1]


def test_validation_worse_than_its_start_before_any_learning_is_not_overfitting_early():
    # an SGD run whose validation loss creeps up from the first check while training falls: it
    # has learned nothing yet (many such runs learn later), so no overfitting stop in the
    # first half of the budget; if it is still so in the second half, it is stopped
    e = np.arange(1, 81, dtype=float)
    val = 1.0964 + 0.0004 * e
    train = 1.09 - 0.0005 * e
    advices = feed(Advisor(train_metric="train_loss", max_steps=100, lr_plan={1: 1e-3}), val,
                   extra={"train_loss": train, "lr": np.full(e.size, 1e-3)})
    early = advices[:49]
    assert not any(a.should_stop for a in early)
    assert any("has not improved by more than" in a.reason for a in early)
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.OVERFITTING and stop.step >= 50


def test_a_run_whose_best_was_its_first_check_has_not_learned_however_far_it_rose():
    # validation worse at every check after the first, by far more than the tolerance: its
    # first checks' level is well above its best, but the best came first, so nothing was
    # learned and nothing overfitted; early in the budget it is not an overfitting stop
    e = np.arange(1, 81, dtype=float)
    val = 0.9 + 0.003 * (e - 1)
    train = 1.0 - 0.004 * e
    advices = feed(Advisor(train_metric="train_loss", max_steps=100, lr_plan={1: 1e-3}), val,
                   extra={"train_loss": train, "lr": np.full(e.size, 1e-3)})
    assert not any(a.should_stop for a in advices[:49])
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.OVERFITTING and stop.step >= 50


def test_a_flat_noisy_start_is_not_learning_however_low_its_luckiest_check():
    # a run that sits at its initial level (iid noise, 300 checks of a budget of 1,000, a
    # constant planned rate) has learned nothing: its best check lies below its level by the
    # luck of the best of 300 draws (about 2.9 noise scales, here more than the tolerance),
    # which is not learning, so neither a plateau nor an overfitting stop while it waits
    e = np.arange(1, 301, dtype=float)
    for seed in range(24):
        rng = np.random.default_rng(seed)
        val = 2.0 + 0.01 * rng.normal(0, 1, e.size)
        train = 1.9 + 0.003 * rng.normal(0, 1, e.size)
        advices = feed(Advisor(train_metric="train_loss", max_steps=1000, lr_plan={1: 1e-3}),
                       val, extra={"train_loss": train, "lr": np.full(e.size, 1e-3)})
        assert first_stop(advices) is None, seed


def test_a_slow_early_drift_is_not_a_divergence_but_an_explosion_is():
    # validation loss creeping up 1% over the first checks (an SGD run that has not started to
    # learn) is far from blown up in the metric's own terms, however small its early noise
    y = 1.0964 + 0.0027 * np.arange(12) ** 1.2
    advices = feed(Advisor(max_steps=300, min_checks=3), y)
    assert all(a.verdict is not Verdict.DIVERGED for a in advices)
    exploded = feed(Advisor(max_steps=300, min_checks=3), [*y[:10], 50.0, 400.0], stop=True)
    assert exploded[-1].verdict is Verdict.DIVERGED and exploded[-1].step == 12


def test_accuracy_on_a_small_validation_set_is_not_stopped_on_a_short_tie():
    # 36 validation samples: accuracy moves in steps of 1/36, bigger than the 1% tolerance; a
    # few tied checks early in the budget hide any slope below one sample per window
    correct = np.array([20, 24, 27, 29, 30, 31, 32, 32, 32, 32, 32, 32, 32, 32])
    acc = correct / 36.0
    advisor = Advisor("val_acc", "max", max_steps=100, lr_plan={1: 1e-3})
    advices = feed(advisor, acc, extra={"lr": np.full(acc.size, 1e-3)})
    assert first_stop(advices) is None
    plateau = advices[-1].evidence_for("plateau")
    assert plateau is not None and plateau.details["resolution"] == pytest.approx(1 / 36)
    # held to the end of the budget, the tie is still not a stop: one more sample would gain
    # 1/36, three tolerances, and after a tie of w checks the chance of one more within the r
    # checks left is about r / w, never within the level the repeated looks allow before the end
    long = np.concatenate([acc, np.full(100 - acc.size, 32 / 36)])
    advices = feed(Advisor("val_acc", "max", max_steps=100, lr_plan={1: 1e-3}), long,
                   extra={"lr": np.full(long.size, 1e-3)})
    assert first_stop(advices) is None
    plateau = advices[-2].evidence_for("plateau")
    assert 0 < plateau.details["jump_chance"] < 0.2 and "of one more step" in plateau.summary
    assert "a min_delta of one step (0.0278) would let it decide" in advices[-2].reason
    # a user for whom one sample is not worth training for says so with min_delta: a plateau
    advices = feed(Advisor("val_acc", "max", max_steps=100, lr_plan={1: 1e-3},
                           min_delta=1 / 36), long, extra={"lr": np.full(long.size, 1e-3)})
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU and stop.step < 100


def test_a_plateau_too_noisy_to_resolve_says_so_and_what_would_help():
    # accuracy on 50 validation samples, flat at 0.88 after a quick rise: its noise (about 0.046)
    # is five times the 1% tolerance, so no window of this run can rule out a 1% gain; the
    # advisor waits, and its reason says why and what lets it decide
    rng = np.random.default_rng(0)
    x = np.arange(1, 201)
    acc = rng.binomial(50, 0.88 - 0.5 * np.exp(-x / 8)) / 50
    advices = feed(Advisor("val_acc", "max", max_steps=200, lr_plan={1: 1e-3}), acc,
                   extra={"lr": np.full(acc.size, 1e-3)})
    unclear = [a for a in advices if a.reason.startswith("Not clear yet")]
    assert unclear and all("min_delta" in a.reason for a in unclear[-10:])
    # with the min_delta it suggests, the same run is stopped on its plateau
    noise = unclear[-1].evidence_for("plateau").noise_scale
    assert f"{2 * noise:.2g}" in unclear[-1].reason
    tolerant = feed(Advisor("val_acc", "max", max_steps=200, lr_plan={1: 1e-3},
                            min_delta=2 * noise), acc, extra={"lr": np.full(acc.size, 1e-3)})
    stop = first_stop(tolerant)
    assert stop is not None and stop.verdict is Verdict.PLATEAU and stop.step < 190
    # a quiet curve gets no such hint
    quiet = feed(Advisor(max_steps=200), 1.0 + np.exp(-x[:40] / 30.0) + 1e-4 * rng.normal(size=40))
    assert not any("min_delta" in a.reason for a in quiet)


def test_an_accuracy_at_its_ceiling_has_nothing_left_to_gain():
    # a small validation set classified perfectly at check 7: later checks can at most tie it,
    # so the run is stopped there, whatever the schedule still holds, and that check kept
    acc = [0.4, 0.6, 0.8, 0.9, 0.93, 0.97, 1.0, 0.97, 1.0, 1.0]
    plan = {1: 0.1, 50: 0.01}  # a decay still ahead would hold a plateau back
    stop = first_stop(feed(Advisor("val_acc", "max", max_steps=100, lr_plan=plan), acc))
    assert stop is not None and stop.step == 7 and stop.verdict is Verdict.PLATEAU
    assert stop.suggested_stop_step == 7 and stop.reason.startswith("Nothing left to gain")
    assert stop.evidence_for("bound") is not None
    # not before the fewest checks for a verdict
    early = first_stop(feed(Advisor("val_acc", "max", max_steps=100), [0.9, 1.0, *acc[2:]]))
    assert early is not None and early.step == 6
    # no bound: asked not to, an accuracy in percent, a loss, or a name that says nothing
    for advisor, values in ((Advisor("val_acc", "max", max_steps=100, best_possible=None), acc),
                            (Advisor("val_acc", "max", max_steps=100),
                             [100 * v for v in acc]),
                            (Advisor("val_score", "max", max_steps=100), acc)):
        assert first_stop(feed(advisor, values)) is None
    # a bound the user gives: an error rate that reached 0
    err = [1 - v for v in acc]
    stop = first_stop(feed(Advisor("val_error", "min", max_steps=100, best_possible=0.0), err))
    assert stop is not None and stop.step == 7


def test_an_accuracy_within_the_tolerance_of_its_ceiling_has_nothing_worth_training_for():
    # 0.995 on 200 samples: at most 0.005 more is possible, less than the 1% tolerance (0.00995)
    acc = [0.6, 0.8, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995, 0.99, 0.995]
    stop = first_stop(feed(Advisor("val_acc", "max", max_steps=100, lr_plan={1: 0.1, 50: 0.01}),
                           acc))
    assert stop is not None and stop.step == 9 and stop.verdict is Verdict.PLATEAU
    assert stop.reason.startswith("Nothing worth training for")
    bound = stop.evidence_for("bound")
    assert bound.details["headroom"] == pytest.approx(0.005)
    assert stop.evidence_for("forecast") is not None  # the rest of the advice is still there
    # a user who counts a 0.1% gain as worth it goes on
    strict = feed(Advisor("val_acc", "max", max_steps=100, lr_plan={1: 0.1, 50: 0.01},
                          min_improvement=0.001), acc)
    assert not any(a.reason.startswith("Nothing") for a in strict)


@pytest.mark.parametrize("bad", ["max", math.nan, math.inf, True])
def test_best_possible_must_be_a_finite_number_auto_or_none(bad):
    with pytest.raises(ValueError, match="best_possible"):
        Advisor("val_acc", "max", best_possible=bad)


# ---------------------------------------------------------------------------- missing monitor


def test_monitor_never_logged_raises_and_lists_the_metrics_present():
    advisor = Advisor(monitor="val_loss")
    with pytest.raises(MetricNotFoundError) as info:
        advisor.update(1, {"loss": 1.0, "acc": 0.5})
    message = str(info.value)
    assert "val_loss" in message and "loss" in message and "acc" in message
    assert isinstance(info.value, KeyError)
    assert advisor.history.values("loss").tolist() == [1.0]
    assert advisor.history.values("acc").tolist() == [0.5]
    assert advisor.history.steps.tolist() == [1.0]


def test_monitor_logged_after_a_missing_one_is_accepted():
    advisor = Advisor(monitor="val_loss")
    with pytest.raises(MetricNotFoundError):
        advisor.update(1, {"loss": 1.0})
    advice = advisor.update(2, {"loss": 0.9, "val_loss": 0.8})
    assert advice.step == 2.0 and advice.best_value == 0.8


# ---------------------------------------------------------------------------- history rules


def test_duplicate_step_last_wins_with_one_warning():
    advisor = Advisor()
    advisor.update(1, {"val_loss": 1.0, "train_loss": 2.0})
    with pytest.warns(AdvisorWarning, match="twice"):
        advisor.update(1, {"val_loss": 0.5})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        advice = advisor.update(1, {"val_loss": 0.25})
    assert not [w for w in caught if issubclass(w.category, AdvisorWarning)]
    assert advisor.history.steps.tolist() == [1.0]
    assert advisor.history.values("val_loss").tolist() == [0.25]
    assert advisor.history.values("train_loss").tolist() == [2.0]
    assert advice.best_value == 0.25


def test_out_of_order_step_is_inserted_in_order():
    advisor = Advisor()
    advisor.update(1, {"val_loss": 1.0})
    advisor.update(3, {"val_loss": 0.6})
    with pytest.warns(AdvisorWarning):
        advice = advisor.update(2, {"val_loss": 0.8})
    assert advisor.history.steps.tolist() == [1.0, 2.0, 3.0]
    assert advisor.history.values("val_loss").tolist() == [1.0, 0.8, 0.6]
    assert advice.best_step == 3.0


def test_non_numeric_metric_value_is_a_type_error():
    with pytest.raises(TypeError, match="val_loss"):
        Advisor().update(1, {"val_loss": "0.5"})


def test_non_finite_step_is_a_value_error():
    with pytest.raises(ValueError, match="step"):
        Advisor().update(math.nan, {"val_loss": 0.5})


# ---------------------------------------------------------------------------- learning rate


def _flat_after_drop(seed=2):
    rng = np.random.default_rng(seed)
    e = np.arange(1, 61, dtype=float)
    return e, 0.3 + np.exp(-e / 4) + rng.normal(0, 0.0005, e.size)


def test_flat_curve_while_lr_decays_smoothly_is_not_a_stop():
    e, y = _flat_after_drop()
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * e / 200))  # a 200-epoch cosine, still above 75%
    advices = feed(Advisor(max_steps=200), y, extra={"lr": lr})
    assert not any(a.should_stop for a in advices)
    last = advices[-1]
    assert last.verdict is Verdict.UNDECIDED
    assert last.evidence_for("schedule").details["decay_pending"]


def test_same_flat_curve_with_constant_lr_stops():
    e, y = _flat_after_drop()
    advices = feed(Advisor(max_steps=60), y, extra={"lr": np.full(e.size, 0.1)})
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert "constant" in stop.evidence_for("schedule").summary


def test_flat_curve_under_a_decay_that_will_not_go_far_in_the_budget_stops():
    # the same cosine, but the run ends at epoch 60: the rate only falls to 0.79 of its peak by
    # then, so no decay is coming that could break the plateau (it is told apart by its pace)
    e, y = _flat_after_drop()
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * e / 200))
    stop = first_stop(feed(Advisor(max_steps=60), y, extra={"lr": lr}))
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert stop.evidence_for("schedule").details["known"] is True


def test_lightning_style_lr_name_is_found_automatically():
    e, y = _flat_after_drop()
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * e / 200))
    advices = feed(Advisor(max_steps=200), y, extra={"lr-Adam": lr})
    assert not any(a.should_stop for a in advices)
    assert advices[-1].evidence_for("schedule").details["known"] is True


def test_lr_metric_none_ignores_the_logged_learning_rate():
    e, y = _flat_after_drop()
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * e / 200))
    advices = feed(Advisor(max_steps=60, lr_metric=None), y, extra={"lr": lr})
    assert first_stop(advices) is not None
    assert advices[-1].evidence_for("schedule").details["known"] is False


def test_plateau_window_starts_after_a_step_drop_in_lr():
    rng = np.random.default_rng(3)
    e = np.arange(1, 61, dtype=float)
    before = 1 / np.sqrt(e[:30]) + rng.normal(0, 0.005, 30)
    after = 0.1 + 0.05 * np.exp(-np.arange(30) / 3) + rng.normal(0, 0.005, 30)
    lr = np.r_[np.full(30, 0.1), np.full(30, 0.01)]
    drop_step = 31.0
    advices = feed(Advisor(max_steps=100), np.r_[before, after], extra={"lr": lr})
    windows = [a.evidence_for("plateau").window for a in advices[30:]
               if a.evidence_for("plateau") is not None]
    assert windows
    assert all(w[0] >= drop_step for w in windows)
    assert advices[-1].evidence_for("schedule").details["drops"] == 1


def test_without_lr_the_schedule_is_reported_unknown(saturating_curve):
    stop = feed(Advisor(max_steps=60), saturating_curve, stop=True)[-1]
    schedule = stop.evidence_for("schedule")
    assert schedule.details["known"] is False
    assert "unknown" in schedule.summary
    assert "unknown" in stop.reason


# ---------------------------------------------------------------------------- overfitting


def _u_shaped_run(seed=2):
    rng = np.random.default_rng(seed)
    x = np.arange(1, 61, dtype=float)
    val = 0.5 + 0.0008 * (x - 25) ** 2 + rng.normal(0, 0.005, x.size)
    return x, val, 1 / np.sqrt(x)


def test_u_shaped_validation_with_decreasing_train_is_overfitting():
    x, val, train = _u_shaped_run()
    advisor = Advisor(train_metric="train_loss", max_steps=100)
    stop = feed(advisor, val, extra={"train_loss": train}, stop=True)[-1]
    assert stop.verdict is Verdict.OVERFITTING
    assert stop.should_stop
    assert stop.step < 60
    assert abs(stop.suggested_stop_step - 25) <= 3
    assert abs(stop.best_step - 25) <= 3
    details = stop.evidence_for("overfitting").details
    assert details["generalization_loss"] > 0
    assert math.isfinite(details["progress_quotient"])
    assert details["train_improving"] is True


def test_accuracy_that_falls_with_train_accuracy_is_not_overfitting():
    # mode="max": validation and training accuracy collapse together (an unstable run): the
    # train metric must be read in the metric's own direction, so this is not overfitting.
    x, val, train = _u_shaped_run()
    val_acc, train_acc = 1.0 - val, 1.0 - train
    collapsing = train_acc.copy()
    collapsing[25:] = train_acc[25] - (train_acc[25:] - train_acc[25]) * 3.0
    unstable = Advisor("val_acc", "max", train_metric="train_acc", max_steps=100)
    seen = {a.verdict for a in feed(unstable, val_acc, extra={"train_acc": collapsing})}
    assert Verdict.OVERFITTING not in seen
    learning = Advisor("val_acc", "max", train_metric="train_acc", max_steps=100)
    stop = feed(learning, val_acc, extra={"train_acc": train_acc}, stop=True)[-1]
    assert stop.verdict is Verdict.OVERFITTING
    assert stop.evidence_for("overfitting").details["train_improving"] is True
    # told in the accuracy's own direction: it falls, by a negative amount, and no quotient
    # that only a loss has (Prechelt's GL and PQ) is shown as nan
    ev = stop.evidence_for("overfitting").summary
    assert "val_acc is falling since its smoothed best" in ev and "falling trend" in ev
    assert "rising" not in stop.reason and "nan" not in stop.reason.lower()
    assert re.search(r"best \([^)]*\): -\d", ev), ev


def test_a_noisy_stall_is_not_overfitting_and_a_rise_is_never_a_plateau():
    # validation reaches its floor at epoch 20 and then stalls there, noisy, while training
    # improves: no "onset" stop (that was patience on a smoothed curve, and cost runs whose
    # validation improved again); stalls are the plateau test's to judge
    x = np.arange(1, 61, dtype=float)
    train = {"train_loss": 1 / np.sqrt(x)}
    stalls = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        val = 0.5 + np.where(x < 20, 0.02 * (20 - x), 0.0) + rng.normal(0, 0.004, x.size)
        advices = feed(Advisor(train_metric="train_loss", max_steps=100), val, extra=train)
        stalls += any(a.verdict is Verdict.OVERFITTING for a in advices)
        assert all(not a.should_stop for a in advices if a.step < 35)
    assert stalls <= 1
    rng = np.random.default_rng(11)
    # the same run whose validation rises clearly after epoch 20 is overfitting, never a plateau
    rising = 0.5 + np.where(x < 20, 0.02 * (20 - x), 0.002 * (x - 20))
    rising = rising + rng.normal(0, 0.004, x.size)
    stop = feed(Advisor(train_metric="train_loss", max_steps=100), rising, extra=train,
                stop=True)[-1]
    assert stop.verdict is Verdict.OVERFITTING and stop.step < 45
    assert abs(stop.best_step - 20) <= 3 and stop.suggested_stop_step == stop.best_step
    ev = stop.evidence_for("overfitting")
    assert "is rising since its smoothed best" in ev.summary
    assert "train_loss is still improving" in ev.summary


def test_a_drift_up_smaller_than_the_tolerance_is_a_plateau_not_overfitting():
    """Overfitting has an effect size: validation that creeps up significantly but by far less
    than the tolerance over the plateau's window (0.05% of a 0.5 loss) has stalled, and is told
    as a plateau; the same run rising by more than the tolerance is overfitting."""
    x = np.arange(1, 81, dtype=float)
    train = {"train_loss": 1 / np.sqrt(x)}
    noise = np.random.default_rng(3).normal(0, 0.00005, x.size)
    verdicts = {}
    for drift in (0.00001, 0.0005):
        val = 0.5 + np.where(x < 20, 0.02 * (20 - x), drift * (x - 20)) + noise
        stop = feed(Advisor(train_metric="train_loss", max_steps=100), val, extra=train,
                    stop=True)[-1]
        assert stop.should_stop
        verdicts[drift] = stop.verdict
        window = stop.evidence_for("plateau")
        assert window is not None and window.details["slope"] > 0
    assert verdicts == {0.00001: Verdict.PLATEAU, 0.0005: Verdict.OVERFITTING}


def test_overfitting_without_a_train_metric_says_it_is_validation_only():
    x, val, _ = _u_shaped_run()
    stop = feed(Advisor(max_steps=100), val, stop=True)[-1]
    assert stop.verdict is Verdict.OVERFITTING
    assert "validation-only" in stop.evidence_for("overfitting").summary


# ---------------------------------------------------------------------------- forecast


def test_forecast_with_a_budget_is_ordered_and_expected_gain_non_negative():
    rng = np.random.default_rng(4)
    e = np.arange(1, 41, dtype=float)
    y = 0.2 + e ** -0.7 + rng.normal(0, 0.003, e.size)
    advices = feed(Advisor(max_steps=100), y)
    later = advices[10:]
    assert all(a.forecast is not None for a in later)
    for a in later:
        f = a.forecast
        assert f.low <= f.value <= f.high
        assert f.step == 100.0
        assert a.expected_gain >= 0
        lo, hi = a.expected_gain_interval
        assert 0 <= lo <= a.expected_gain <= hi


def test_the_forecast_interval_is_the_calibrated_one_unless_switched_off(saturating_curve):
    from advisor.detectors.forecast import conformal_interval

    y = saturating_curve[:40]
    plan = {1: 0.1, 60: 0.01}
    advice = feed(Advisor(max_steps=100, lr_plan=plan), y)[-1]
    f = advice.forecast
    assert f.calibrated and f.ahead == "decay" and f.scale > 0
    # calibrated around the curve models' own value
    assert (f.low, f.high) == pytest.approx(conformal_interval(f.model_value, f.scale, 0.4,
                                                               "decay"))
    raw = feed(Advisor(max_steps=100, lr_plan=plan, forecast_calibration=False), y)[-1].forecast
    assert not raw.calibrated and raw.model_value == pytest.approx(f.model_value)
    assert (raw.low, raw.high) != pytest.approx((f.low, f.high))
    # another level than the calibrated 90% keeps the models' interval
    other = feed(Advisor(max_steps=100, lr_plan=plan, forecast_level=0.8), y)[-1].forecast
    assert not other.calibrated
    # so does a schedule nothing says anything about (no plan, no rate logged): the tables were
    # calibrated knowing it
    unknown = feed(Advisor(max_steps=100), y)[-1].forecast
    assert unknown.ahead == "unknown" and not unknown.calibrated


def test_the_forecast_read_is_between_the_latest_level_and_the_models_extrapolation():
    from advisor.detectors.forecast import combined_forecast

    rng = np.random.default_rng(8)
    e = np.arange(1, 61, dtype=float)
    y = 0.2 + e ** -0.7 + rng.normal(0, 0.002, e.size)
    advice = feed(Advisor(max_steps=100, lr_plan={1: 0.1}), y)[-1]
    f = advice.forecast
    level = float(np.median(y[-3:]))
    # at 60% of the budget, 20% of the way from the level to the models' value
    assert f.value == pytest.approx(level + 0.2 * (f.model_value - level))
    assert min(level, f.model_value) < f.value < max(level, f.model_value)
    assert f.value == pytest.approx(combined_forecast(f.model_value, level, 0.6, (f.low, f.high)))
    assert advice.expected_gain == pytest.approx(max(0.0, advice.best_value - f.value))
    assert advice.evidence_for("forecast").details["value"] == f.value  # one story
    # with nothing known of the schedule there is no calibration, and the models' own forecast
    unknown = feed(Advisor(max_steps=100), y)[-1].forecast
    assert not unknown.calibrated and unknown.value == unknown.model_value


def test_no_forecast_without_a_budget():
    e = np.arange(1, 41, dtype=float)
    advices = feed(Advisor(), 0.2 + e ** -0.7)
    assert all(a.forecast is None and a.expected_gain is None for a in advices)


def test_forecast_of_an_accuracy_is_in_accuracy_units():
    e = np.arange(1, 41, dtype=float)
    acc = 0.9 - 0.5 * e ** -0.7
    advice = feed(Advisor("val_acc", "max", max_steps=100), acc)[-1]
    f = advice.forecast
    assert f.low <= f.value <= f.high
    assert abs(f.value - (0.9 - 0.5 * 100 ** -0.7)) < 0.05
    assert advice.best_value == pytest.approx(acc.max())


def _decades_curve() -> np.ndarray:
    """A loss from 10 down to 0.0135 in 20 epochs (the README picture's run)."""
    e = np.arange(1, 21, dtype=float)
    return 0.0135 + 12 * np.exp(-e / 1.9)


def test_a_loss_observed_positive_gets_a_positive_forecast_and_interval():
    # fitted on a linear scale, its forecast at epoch 60 was about -0.05 (interval -3.8 to 3.7)
    advice = feed(Advisor(max_steps=60), _decades_curve())[-1]
    f = advice.forecast
    assert f is not None and 0 < f.low <= f.value <= f.high
    assert all(m.startswith("log-") for m in f.models)
    lo, hi = advice.expected_gain_interval
    assert 0 <= lo <= advice.expected_gain <= hi <= advice.best_value  # never more than all
    assert f"interval {f.low:.4g} to {f.high:.4g}" in advice.evidence_for("forecast").summary


def test_an_accuracy_observed_positive_keeps_a_positive_pessimistic_bound():
    e = np.arange(1, 13, dtype=float)
    acc = 0.02 + 0.9 * (1 - np.exp(-e / 2)) + np.random.default_rng(3).normal(0, 0.01, e.size)
    f = feed(Advisor("val_acc", "max", max_steps=200), acc)[-1].forecast
    assert f is not None and 0 < f.low <= f.value <= f.high


def test_a_forecast_that_keeps_the_sign_is_the_linear_fit_unchanged():
    e = np.arange(1, 41, dtype=float)
    f = feed(Advisor(max_steps=100), 0.2 + e ** -0.7)[-1].forecast
    assert f.low > 0 and not any(m.startswith("log-") for m in f.models)


def test_a_curve_that_crosses_zero_has_no_log_fit():
    from advisor.detectors import fit_learning_curve

    e = np.arange(1, 21, dtype=float)
    fit = fit_learning_curve(e, 2 * np.exp(-e / 3) - 0.5)  # a loss that is negative at the end
    assert fit is not None and fit.log_fit is None


def test_state_dict_round_trip_keeps_the_log_space_forecast():
    curve = _decades_curve()
    advisor = Advisor(max_steps=60)
    feed(advisor, curve[:15])
    resumed = Advisor(max_steps=60)
    resumed.load_state_dict(json.loads(json.dumps(advisor.state_dict())))
    a, b = feed(advisor, curve[15:], steps=range(16, 21)), feed(
        resumed, curve[15:], steps=range(16, 21))
    assert [x.forecast for x in a] == [y.forecast for y in b]


# ---------------------------------------------------------------------------- state


def _state_curve():
    rng = np.random.default_rng(5)
    e = np.arange(1, 61, dtype=float)
    val = 0.3 + np.exp(-e / 6) + rng.normal(0, 0.004, e.size)
    val[12] = math.nan
    extra = {"train_loss": 0.2 + np.exp(-e / 5), "lr": np.r_[np.full(25, 0.1), np.full(35, 0.01)]}
    return val, extra


@pytest.mark.parametrize("split", [4, 13, 20, 31, 40, 47])
def test_state_dict_round_trip_continues_exactly(split):
    val, extra = _state_curve()
    settings = {"monitor": "val_loss", "train_metric": "train_loss", "max_steps": 60}
    uninterrupted = [a.to_dict() for a in feed(Advisor(**settings), val, extra=extra)]

    first = Advisor(**settings)
    feed(first, val[:split], extra={k: v[:split] for k, v in extra.items()})
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = Advisor(**settings)
    resumed.load_state_dict(state)
    assert resumed.advice.to_dict() == uninterrupted[split - 1]
    rest = feed(resumed, val[split:], steps=range(split + 1, 61),
                extra={k: v[split:] for k, v in extra.items()})
    assert [a.to_dict() for a in rest] == uninterrupted[split:]


def test_state_dict_round_trip_across_a_pending_plateau_confirmation(saturating_curve):
    settings = {"max_steps": 60, "confirm": 3}
    uninterrupted = feed(Advisor(**settings), saturating_curve)
    pending = [i for i, a in enumerate(uninterrupted[:-1])
               if a.evidence_for("plateau") is not None
               and a.evidence_for("plateau").details["state"] == "plateau" and not a.should_stop]
    assert pending
    split = pending[0] + 1
    first = Advisor(**settings)
    feed(first, saturating_curve[:split])
    resumed = Advisor(**settings)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    rest = feed(resumed, saturating_curve[split:], steps=range(split + 1, 61))
    assert [a.to_dict() for a in rest] == [a.to_dict() for a in uninterrupted[split:]]


def test_loading_the_state_of_another_monitor_or_mode_is_a_value_error():
    advisor = Advisor("val_loss")
    feed(advisor, [1.0, 0.9, 0.8])
    state = advisor.state_dict()
    with pytest.raises(ValueError, match="val_acc"):
        Advisor("val_acc", "max").load_state_dict(state)
    with pytest.raises(ValueError, match="max"):
        Advisor("val_loss", "max").load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        Advisor("val_loss").load_state_dict({**state, "version": 99})


def test_state_of_a_fresh_advisor_loads_with_no_advice():
    state = json.loads(json.dumps(Advisor().state_dict()))
    advisor = Advisor()
    advisor.load_state_dict(state)
    assert advisor.advice is None
    assert len(advisor.history) == 0


# ---------------------------------------------------------------------------- advice format


def test_advice_to_dict_is_json_safe_with_nan_as_none():
    advices = feed(Advisor(max_steps=30), [1.0, 0.8, 0.7, 0.65, 0.6, 0.58, math.nan])
    data = advices[-1].to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["verdict"] == "diverged"
    assert data["evidence"][0]["details"]["threshold"] is None


def test_advice_to_dict_is_json_safe_for_every_verdict(saturating_curve):
    x, val, train = _u_shaped_run()
    runs = [feed(Advisor(max_steps=60), saturating_curve),
            feed(Advisor(train_metric="train_loss", max_steps=100), val,
                 extra={"train_loss": train})]
    seen = set()
    for advices in runs:
        for a in advices:
            data = a.to_dict()
            json.dumps(data, allow_nan=False)
            seen.add(data["verdict"])
    assert {"improving", "undecided", "plateau", "overfitting"} <= seen


def test_verdict_values_are_plain_strings():
    assert [v.value for v in Verdict] == [
        "improving", "undecided", "plateau", "overfitting", "diverged", "unpromising"]
    assert Verdict("plateau") is Verdict.PLATEAU
    assert Verdict.PLATEAU == "plateau"
    assert {v for v in Verdict if v.stops} == {
        Verdict.PLATEAU, Verdict.OVERFITTING, Verdict.DIVERGED, Verdict.UNPROMISING}


def test_advice_property_is_the_latest_advice():
    advisor = Advisor()
    assert advisor.advice is None
    returned = advisor.update(1, {"val_loss": 1.0})
    assert advisor.advice is returned


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"mode": "minimize"}, "minimize"),
    ({"monitor": ""}, "''"),
    ({"max_steps": -5}, "-5"),
    ({"max_steps": 0}, "0"),
    ({"max_steps": math.nan}, "nan"),
    ({"min_checks": 2}, "2"),
    ({"min_improvement": 1.5}, "1.5"),
    ({"alpha": 1.5}, "1.5"),
    ({"confidence": 0.0}, "0.0"),
    ({"confirm": 0}, "0"),
    ({"min_window": 10, "max_window": 5}, "10"),
    ({"decay": -1.0}, "-1.0"),
    ({"refit_growth": 1.0}, "1.0"),
    ({"unit": "two words"}, "two words"),
])
def test_constructor_rejects_bad_settings_naming_the_value(kwargs, shown):
    with pytest.raises(ValueError) as info:
        Advisor(**kwargs)
    assert shown in str(info.value)
    name = next(iter(kwargs))
    assert name in str(info.value)


@pytest.mark.parametrize("budget", [np.int64(60), np.int32(60), np.float32(60.0),
                                    np.float64(60.0), np.uint16(60)])
def test_numpy_numbers_are_accepted_as_max_steps(budget, saturating_curve):
    """A budget computed with numpy (len(loader) * epochs, np.ceil) is a number like any other."""
    advisor = Advisor(max_steps=budget)
    assert advisor.max_steps == 60.0 and type(advisor.max_steps) is float
    plain = feed(Advisor(max_steps=60), saturating_curve)
    assert [a.to_dict() for a in feed(advisor, saturating_curve)] == [a.to_dict() for a in plain]


@pytest.mark.parametrize("budget", [math.inf, np.inf, 10**400, True, "60", np.array([60])],
                         ids=["inf", "np.inf", "10**400", "True", "'60'", "array"])
def test_max_steps_that_is_not_a_finite_number_is_refused(budget):
    with pytest.raises(ValueError, match="max_steps must be a positive number or None, but got"):
        Advisor(max_steps=budget)


@pytest.mark.parametrize("step", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_integer_steps_beyond_the_float_range_are_a_value_error(step):
    """Documented: a step that is not a real number raises TypeError or ValueError (it raised
    OverflowError); the history is unchanged."""
    advisor = Advisor()
    advisor.update(1, {"val_loss": 1.0})
    with pytest.raises(ValueError, match="step must be a finite number, but got an integer "
                                         "beyond the float range"):
        advisor.update(step, {"val_loss": 0.5})
    with pytest.raises(ValueError, match="metric 'val_loss' .* beyond the float range"):
        advisor.update(2, {"val_loss": 10**400})
    assert len(advisor.history) == 1


def test_extreme_values_leak_no_numpy_warnings():
    """Values near the float range overflow inside the statistics; the advice handles that, and
    the user's log must not fill with numpy's RuntimeWarnings."""
    e = np.arange(1, 41)
    curves = [np.where(e % 2 == 0, 1e308, -1e308), 1e300 * (0.3 + np.exp(-e / 4)),
              np.where(e == 21, 1.7976931348623157e308, 0.3 + np.exp(-e / 4))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for mode in ("min", "max"):
            for values in curves:
                advisor = Advisor("val_loss", mode, train_metric="train_loss", max_steps=60)
                feed(advisor, values, extra={"train_loss": values[::-1], "lr": np.abs(values)})
                advisor.load_state_dict(advisor.state_dict())


@pytest.mark.parametrize("curve", ["plateau", "overfitting"])
def test_reasons_count_in_the_callers_unit(saturating_curve, curve):
    """Tags and tables say "epoch": so do the reason and every piece of evidence."""
    if curve == "plateau":
        advisor, values, extra = Advisor(max_steps=60, unit="epoch"), saturating_curve, None
    else:
        _, values, train = _u_shaped_run()
        advisor, extra = Advisor(train_metric="train_loss", max_steps=100, unit="epoch"), {
            "train_loss": train}
    stop = feed(advisor, values, extra=extra, stop=True)[-1]
    assert stop.verdict.value == curve
    texts = [stop.reason] + [e.summary for e in stop.evidence]
    assert any(f"epoch {stop.best_step:g}" in t for t in texts)
    for text in texts:
        assert " step" not in text, text


def test_a_planned_decay_is_named_in_the_callers_unit():
    # flat from epoch 10 on, with a decay planned at epoch 60 of 80: wait for it, in epochs
    e = np.arange(1, 41, dtype=float)
    values = 0.5 + 0.5 * np.exp(-e / 3) + np.random.default_rng(2).normal(0, 0.002, e.size)
    advisor = Advisor(max_steps=80, lr_plan={1: 0.1, 60: 0.01}, unit="epoch")
    advices = feed(advisor, values)
    assert not any(a.should_stop for a in advices)
    texts = [a.reason for a in advices] + [e.summary for a in advices for e in a.evidence]
    assert any("at epoch 60" in t for t in texts)
    assert not [t for t in texts if " step" in t]


def test_import_advisor_does_not_import_heavy_frameworks():
    code = ("import sys, advisor; print(sorted(m for m in ('torch', 'lightning', "
            "'pytorch_lightning', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_long_flat_run_validated_at_every_step_is_stopped_on_all_of_its_checks():
    """3,000 checks, flat after the first 600 or so, noise of twice the tolerance: the window
    is a thousand checks long, and thinning it to 48 points threw away the data that makes
    its slope precise (the run was never stopped). Its block means use every check."""
    n = 3000
    x = np.arange(1, n + 1, dtype=float)
    clean = 0.3 + 1.25 * np.exp(-x / 150)
    values = clean + np.random.default_rng(2).normal(0, 0.006, n)
    advices = feed(Advisor(train_metric="train_loss", max_steps=n, lr_plan={1: 0.01}), values,
                   extra={"train_loss": clean - 0.05, "lr": np.full(n, 0.01)}, stop=True)
    stop = first_stop(advices)
    assert stop is not None and stop.verdict is Verdict.PLATEAU
    assert len(advices) < 0.8 * n
    kept, final = clean[np.argmin(values[:len(advices)])], clean[np.argmin(values)]
    assert kept - final < 0.01 * final  # the checkpoint kept is as good as training on
    # the reason names the checks the window spans and how they were tested, and the level
    # shared over 3,000 looks with the digits that tell it from certainty
    plateau = next(e for e in stop.evidence if e.detector == "plateau")
    spanned = plateau.details["checks"]
    assert spanned > 500 and plateau.details["n"] == 48
    assert f"over the last {spanned} checks" in stop.reason
    assert "means of 48 blocks" in stop.reason
    assert "99.998% interval" in stop.reason and "100% interval" not in stop.reason


def test_repeated_looks_at_every_check_of_a_long_run_rarely_stop_a_run_still_improving():
    """Asked at all 1,000 checks, the advisor must not find a false plateau somewhere on a
    curve whose rest still gains far more than the tolerance: the plateau test's error is shared
    among the looks (alpha spending), where a test at one fixed check is not enough. A stop in
    the last few percent of the budget, where what is left is worth less than the tolerance, is
    not false: what counts is the cost of the checkpoint kept against training to the end."""
    x = np.arange(1, 1001, dtype=float)
    costly = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        e = rng.normal(0, 1, x.size)
        for i in range(1, x.size):  # AR(1) noise, phi = 0.5
            e[i] = 0.5 * e[i - 1] + math.sqrt(0.75) * e[i]
        clean = 1.0 - 0.02 * np.log(x)  # the last half still gains ~2% of the best
        values = clean + 0.02 * e
        advices = feed(Advisor(train_metric="train_loss", max_steps=1000), values,
                       extra={"train_loss": clean - 0.05}, stop=True)
        kept, final = clean[np.argmin(values[:len(advices)])], clean[np.argmin(values)]
        costly += kept - final > 0.01 * final
    # (each look at the nominal level, alpha_spending=False, stops 7 of these 8 runs at a cost
    # of 2-8%, between checks 51 and 363)
    assert costly == 0
