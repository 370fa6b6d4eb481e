"""AdvisorPruner and advise_trial on constructed studies (in memory and on sqlite)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.pruners import ThresholdPruner
from optuna.trial import TrialState

from advisor import Advisor, AdvisorPruner, Verdict, advise_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPOCHS = 50


def curve(floor: float, scale: float = 0.8, tau: float = 6.0, noise: float = 0.005,
          seed: int = 0, n: int = EPOCHS) -> list[float]:
    rng = np.random.default_rng(seed)
    e = np.arange(n)
    return list(floor + scale * np.exp(-e / tau) + noise * rng.standard_normal(n))


def run_trial(study: optuna.Study, values: list[float], *, finish_early: bool = False):
    """Report ``values`` as a plain objective would; return the finished FrozenTrial."""
    trial = study.ask()
    reported = []
    for step, value in enumerate(values):
        trial.report(value, step)
        reported.append(value)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return study.trials[trial.number]
        if finish_early:
            advice = advise_trial(trial)
            if advice.should_stop:
                study.tell(trial, advice.best_value)
                return study.trials[trial.number]
    best = min(reported) if study.direction.name == "MINIMIZE" else max(reported)
    study.tell(trial, best)
    return study.trials[trial.number]


def study_with(pruner: AdvisorPruner, good: int = 20, floors: list[float] | None = None,
               **kwargs) -> optuna.Study:
    """A study holding ``good`` COMPLETE trials that replayed curves to the end."""
    study = optuna.create_study(pruner=pruner, **kwargs)
    floors = floors or [0.2 + 0.005 * k for k in range(good)]
    sign = 1 if study.direction.name == "MINIMIZE" else -1
    for k, floor in enumerate(floors):
        values = [sign * v + (1 - sign) / 2 for v in curve(floor, seed=k)]  # max: 1 - loss
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=min(values) if sign == 1 else max(values),
            intermediate_values=dict(enumerate(values))))
    return study


def test_a_trial_that_cannot_catch_up_is_pruned_early_with_its_reason():
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3))
    bad = run_trial(study, curve(0.6, seed=7))
    assert bad.state is TrialState.PRUNED
    assert bad.last_step < EPOCHS // 2  # most of its budget saved
    attrs = bad.user_attrs
    assert attrs["advisor.verdict"] == Verdict.UNPROMISING.value
    assert attrs["advisor.pruned"] is True and attrs["advisor.pruned_by"] == "advisor"
    assert attrs["advisor.probability"] < attrs["advisor.threshold"] == 0.05
    assert attrs["advisor.target"] == pytest.approx(study.best_value)
    assert attrs["advisor.predicted_final"] > study.best_value
    assert "chance" in attrs["advisor.reason"] and "best complete trial" in attrs["advisor.reason"]
    # one chance: the one compared with the threshold, the attribute's
    reason = attrs["advisor.reason"]
    assert reason.count("chance") == 1, reason
    assert f"is {attrs['advisor.probability']:.2g} (threshold 0.05)" in reason or (
        attrs["advisor.probability"] < 0.001 and "is below 0.001 (threshold 0.05)" in reason)


def test_a_competitive_trial_is_not_pruned():
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3))
    close = run_trial(study, curve(0.195, seed=11))  # ends a little better than the best
    assert close.state is TrialState.COMPLETE
    assert close.last_step == EPOCHS - 1
    assert "advisor.pruned" not in close.user_attrs


def test_a_slow_starter_that_will_win_is_not_pruned():
    # worse than the best trials for a long time, but its forecast clearly ends below them
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3))
    slow = run_trial(study, curve(0.1, scale=1.0, tau=10.0, seed=5))
    assert slow.state is TrialState.COMPLETE
    assert slow.value < 0.2


def test_nothing_is_pruned_on_promise_before_the_startup_trials_complete():
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=5), good=3)  # <5
    assert run_trial(study, curve(0.9, seed=3)).state is TrialState.COMPLETE


def test_a_diverged_trial_is_pruned_at_once_even_before_the_startup_trials():
    study = optuna.create_study(pruner=AdvisorPruner(max_steps=EPOCHS - 1))
    values = curve(0.3, seed=1)[:8] + [math.nan] + curve(0.3, seed=1)[9:]
    trial = run_trial(study, values)
    assert trial.state is TrialState.PRUNED
    assert trial.last_step == 8
    assert trial.user_attrs["advisor.verdict"] == Verdict.DIVERGED.value
    assert "diverged" in trial.user_attrs["advisor.reason"].lower()


def test_auto_budget_waits_for_a_complete_trial_then_uses_its_last_step():
    pruner = AdvisorPruner()  # max_steps="auto"
    empty = optuna.create_study(pruner=pruner)
    trial = empty.ask()
    for step, value in enumerate(curve(0.7, seed=2)[:10]):
        trial.report(value, step)
    assert advise_trial(trial).forecast is None  # no budget yet, so no forecast
    study = study_with(AdvisorPruner())
    bad = run_trial(study, curve(0.7, seed=2))
    assert bad.state is TrialState.PRUNED
    assert f"at step {EPOCHS - 1}" in bad.user_attrs["advisor.reason"]


def test_maximize_studies_prune_low_accuracy():
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1), direction="maximize")
    best_before = study.best_value
    bad = run_trial(study, [1 - v for v in curve(0.5, seed=9)])
    good = run_trial(study, [1 - v for v in curve(0.15, seed=10)])
    assert bad.state is TrialState.PRUNED and good.state is TrialState.COMPLETE
    assert bad.user_attrs["advisor.target"] == pytest.approx(best_before)


def test_n_best_compares_with_the_nth_best_trial():
    floors = [0.20, 0.22, 0.24] + [0.30 + 0.01 * k for k in range(17)]
    strict = study_with(AdvisorPruner(max_steps=EPOCHS - 1), floors=floors)
    lenient = study_with(AdvisorPruner(max_steps=EPOCHS - 1, n_best=3), floors=floors)
    middling = curve(0.215, noise=0.001, seed=30)  # between the best (0.20) and the 3rd (0.24)
    assert run_trial(strict, middling).state is TrialState.PRUNED
    assert run_trial(lenient, middling).state is TrialState.COMPLETE


def test_wrapped_pruner_prunes_too_and_is_named():
    pruner = AdvisorPruner(max_steps=EPOCHS - 1, wrapped_pruner=ThresholdPruner(upper=0.5))
    study = optuna.create_study(pruner=pruner)
    trial = run_trial(study, [0.4] * 5 + [0.6] * 10)
    assert trial.state is TrialState.PRUNED and trial.last_step == 5
    assert trial.user_attrs["advisor.pruned_by"] == "ThresholdPruner"
    assert trial.user_attrs["advisor.reason"].startswith("Pruned by ThresholdPruner")


def test_advise_trial_finishes_a_converged_trial_complete_with_its_best():
    study = study_with(AdvisorPruner(max_steps=EPOCHS * 4 - 1, n_startup_trials=3))
    # noise well below the sweep's 0.1% tolerance (at 0.3% of the value, 200 steps cannot show
    # that a gain under 0.1% is all that is left at the confidence the repeated looks need)
    values = curve(0.15, tau=4.0, noise=0.00005, seed=3, n=EPOCHS * 4)
    trial = run_trial(study, values, finish_early=True)
    assert trial.state is TrialState.COMPLETE
    # flat after ~30 steps; with no learning rate logged a plateau waits for half the budget
    assert trial.last_step < 0.9 * EPOCHS * 4
    assert trial.value == pytest.approx(min(values[: trial.last_step + 1]))
    assert trial.user_attrs["advisor.verdict"] == Verdict.PLATEAU.value
    assert trial.user_attrs["advisor.finished_early"] is True
    assert trial.user_attrs["advisor.best_value"] == pytest.approx(trial.value)


def test_a_trial_still_gaining_half_a_percent_is_not_finished_early_in_a_sweep():
    # a curve still falling by 0.005% of its value per step: the rest of the budget is worth
    # well under the single run's 1%, but in a sweep half a percent can decide the winner
    rng = np.random.default_rng(4)
    t = np.arange(200)
    values = list(1.0 + 0.3 * np.exp(-t / 5) - 5e-5 * t + 1e-6 * rng.standard_normal(200))
    study = study_with(AdvisorPruner(max_steps=199, n_startup_trials=3), good=4,
                       floors=[1.0, 1.01, 1.02, 1.03])  # it is the study's best
    trial = run_trial(study, values, finish_early=True)
    assert trial.state is TrialState.COMPLETE and trial.last_step >= 170
    # the same curve judged as a single run (1%) stops much earlier
    single = Advisor("value", max_steps=199, lr_plan={0: 1e-3})
    stops = [k for k, v in enumerate(values) if single.update(k, {"value": v}).should_stop]
    assert stops and stops[0] < 150


def test_advise_trial_without_an_advisor_pruner_uses_the_given_budget():
    study = optuna.create_study()  # MedianPruner
    trial = study.ask()
    with pytest.raises(ValueError, match="reported no value"):
        advise_trial(trial)
    for step, value in enumerate(curve(0.3, seed=2)):
        trial.report(value, step)
        advice = advise_trial(trial, max_steps=EPOCHS - 1)
    assert advice.forecast is not None and advice.forecast.step == EPOCHS - 1
    assert advice.best_value == pytest.approx(min(curve(0.3, seed=2)))


def test_decisions_are_the_same_in_a_process_that_never_saw_the_trial(tmp_path):
    # two workers sharing a study: one followed the trial report by report, one did not
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3)
    study = study_with(worker, storage=storage, study_name="shared")
    trial = study.ask()
    values = curve(0.3, seed=8)
    for step, value in enumerate(values[:20]):
        trial.report(value, step)
        warm = worker.prune(study, study.trials[trial.number])
    other = optuna.load_study(study_name="shared", storage=storage,
                              pruner=AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3))
    cold = other.pruner.prune(other, other.trials[trial.number])
    assert warm == cold
    frozen = other.trials[trial.number]
    assert (worker.advise(study, frozen).to_dict()
            == other.pruner.advise(other, frozen).to_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_steps": 0}, "max_steps must be a positive number, 'auto' or None, but got 0"),
    ({"max_steps": "all"}, "but got 'all'"),
    ({"threshold": 1.5}, "threshold must be in \\(0, 1\\), but got 1.5"),
    ({"n_best": 0}, "n_best must be a positive integer, but got 0"),
    ({"n_startup_trials": -1}, "n_startup_trials cannot be negative, but got -1"),
    ({"n_warmup_steps": -2}, "n_warmup_steps cannot be negative, but got -2"),
    ({"min_checks": 1}, "min_checks must be at least 3, but got 1"),
])
def test_bad_settings_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdvisorPruner(**kwargs)


@pytest.mark.parametrize("budget", [np.int64(EPOCHS - 1), np.float32(EPOCHS - 1)])
def test_numpy_numbers_are_accepted_as_max_steps(budget):
    study = study_with(AdvisorPruner(max_steps=budget, n_startup_trials=3))
    bad = run_trial(study, curve(0.6, seed=7))
    assert bad.state is TrialState.PRUNED  # as with max_steps=EPOCHS - 1
    assert bad.user_attrs["advisor.verdict"] == Verdict.UNPROMISING.value


@pytest.mark.parametrize("budget", [math.inf, True, np.array([5])])
def test_max_steps_that_is_not_a_finite_number_is_refused(budget):
    with pytest.raises(ValueError, match="max_steps must be a positive number, 'auto' or None"):
        AdvisorPruner(max_steps=budget)


def test_wrapped_pruner_must_be_a_pruner():
    with pytest.raises(TypeError, match="wrapped_pruner must be an optuna pruner, but got str"):
        AdvisorPruner(wrapped_pruner="median")


# ---------------------------------------------------------------------------- the statistics
def test_chance_to_beat_reads_the_forecast_interval_as_a_split_normal():
    from advisor.detectors.promise import chance_to_beat

    kw = {"best": 0.8, "low": 0.5, "high": 0.9, "level": 0.9}
    assert chance_to_beat(0.9, best=0.85, forecast=1.0, low=0.9, high=1.1, level=0.9
                          ).probability == 1.0  # already better than the target
    assert chance_to_beat(0.6, forecast=0.6, **kw).probability == pytest.approx(0.5)
    assert chance_to_beat(0.5, forecast=0.6, **kw).probability == pytest.approx(0.05)
    # the lower side of the interval decides; a wider one gives more chance
    assert (chance_to_beat(0.5, forecast=0.6, best=0.8, low=0.4, high=0.61, level=0.9).probability
            > chance_to_beat(0.5, forecast=0.6, **kw).probability)
    with pytest.raises(ValueError, match="level must be in"):
        chance_to_beat(0.5, forecast=0.6, best=0.8, low=0.5, high=0.9, level=90)
    with pytest.raises(ValueError, match="must be finite"):
        chance_to_beat(math.nan, forecast=0.6, **kw)


def test_chance_from_peers_counts_the_finished_trials_that_gained_enough():
    from advisor.detectors.promise import chance_from_peers

    at_step, final = np.array([0.5, 0.4, 0.3, 0.6]), np.array([0.2, 0.25, 0.28, 0.21])
    r = chance_from_peers(0.25, best=0.45, peer_best_at_step=at_step, peer_final=final, step=7)
    assert r.needed == pytest.approx(0.2)
    assert (r.gained_enough, r.peers) == (2, 4)  # 0.3 and 0.39 gained more than 0.2
    assert r.probability == pytest.approx(3 / 5)  # conformal: (k + 1) / (n + 1)
    assert r.largest == pytest.approx(0.39)
    empty = chance_from_peers(0.25, 0.45, np.array([]), np.array([]), step=7)
    assert empty.peers == 0 and math.isnan(empty.probability)


def test_the_pruner_travels_to_other_processes_without_its_cache():
    import pickle

    pruner = AdvisorPruner(max_steps=EPOCHS - 1, n_startup_trials=3, min_checks=8)
    study = study_with(pruner, good=4)
    copy = pickle.loads(pickle.dumps(pruner))
    assert (copy.threshold, copy.n_startup_trials, copy.advisors.advisor_kwargs) == (
        0.05, 3, {"min_improvement": 0.001, "min_checks": 8})
    trial = study.trials[-1]
    assert copy.advise(study, trial).to_dict() == pruner.advise(study, trial).to_dict()


# ---------------------------------------------------------------------------- like Optuna's pruners
@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED])
def test_a_finished_trial_whose_last_value_is_nan_is_not_pruned_and_nothing_raises(state):
    """Optuna's pruners answer for a finished trial too; the advisor's tried to write the
    trial's attributes and raised UpdateFinishedTrialError."""
    study = optuna.create_study(pruner=AdvisorPruner(max_steps=EPOCHS - 1))
    trial = study.ask()
    trial.report(0.5, 0)
    trial.report(math.nan, 1)
    study.tell(trial, 0.5 if state is TrialState.COMPLETE else None, state=state)
    frozen = study.trials[trial.number]
    assert study.pruner.prune(study, frozen) is False
    assert trial.should_prune() is False
    assert not any(k.startswith("advisor.") for k in study.trials[trial.number].user_attrs)


def test_multi_objective_studies_are_not_pruned_and_advise_trial_says_why():
    study = optuna.create_study(directions=["minimize", "maximize"],
                                pruner=AdvisorPruner(max_steps=EPOCHS - 1))
    trial = study.ask()
    assert study.pruner.prune(study, study.trials[trial.number]) is False
    with pytest.raises(NotImplementedError, match="multi-objective"):
        advise_trial(trial)


def test_advise_trial_on_a_frozen_trial_takes_the_study():
    study = study_with(AdvisorPruner(max_steps=EPOCHS - 1), good=3)
    trial = study.ask()
    for step, value in enumerate(curve(0.3, seed=3)[:20]):
        trial.report(value, step)
    live = advise_trial(trial)
    frozen = study.trials[trial.number]
    assert isinstance(frozen, optuna.trial.FrozenTrial)
    assert advise_trial(frozen, study=study) == live
    with pytest.raises(TypeError, match="FrozenTrial.*study="):
        advise_trial(frozen)


def test_steps_far_from_zero_are_judged_as_steps_from_one():
    # a global step carried over from earlier training: 10**15 + i. The looks are counted
    # from the first check, so the error rate is shared over 40 checks, not 10**15
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    values = [0.5 + math.exp(-i / 4) for i in range(40)]
    stops = []
    for offset in (0, 10**6, 10**15):
        adv = Advisor("val_loss", max_steps=offset + 40, lr_plan={offset + 1: 0.1})
        stop = next((a for i, v in enumerate(values)
                     if (a := adv.update(offset + i + 1, {"val_loss": v})).should_stop), None)
        assert stop is not None and stop.verdict is Verdict.PLATEAU
        stops.append(stop.step - offset)
    assert stops[0] == stops[1] == stops[2]
    study = optuna.create_study(pruner=AdvisorPruner(max_steps=10**15 + 39))

    def objective(trial):
        for i, v in enumerate(values):
            trial.report(v, 10**15 + i)
            advice = advise_trial(trial)
            if advice.should_stop:
                return advice.best_value
        return values[-1]

    study.optimize(objective, n_trials=1)
    assert study.trials[0].user_attrs["advisor.verdict"] == "plateau"


def test_pruner_and_advise_trial_refuse_what_they_cannot_use():
    with pytest.raises(TypeError, match="n_startup_trials must be a whole number, but got '3'"):
        AdvisorPruner(n_startup_trials="3")
    with pytest.raises(TypeError, match="n_warmup_steps must be a whole number, but got inf"):
        AdvisorPruner(n_warmup_steps=float("inf"))
    with pytest.raises(ValueError, match="threshold must be in"):
        AdvisorPruner(threshold="0.1")
    with pytest.raises(ValueError, match="do not pass mode='max'"):
        AdvisorPruner(mode="max")
    with pytest.raises(TypeError, match="unknown advisor setting.*'bogus'"):
        AdvisorPruner(bogus=1)
    study = optuna.create_study()
    trial = study.ask()
    trial.report(1.0, 0)
    for bad in (0, -1, float("nan"), "auto", True):
        with pytest.raises(ValueError, match="max_steps must be a positive number"):
            advise_trial(trial, max_steps=bad)
    with pytest.raises(TypeError, match="needs an optuna Trial"):
        advise_trial(None)
    with pytest.raises(TypeError, match="study must be an optuna Study"):
        advise_trial(study.trials[0], study="x")
