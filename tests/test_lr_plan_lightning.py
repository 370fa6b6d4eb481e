"""The callback reads the trainer's schedulers into a plan in real Lightning fits (CPU, a small
MLP): it waits for a planned drop, follows step-interval schedules, awaits ReduceLROnPlateau
until its reductions stop paying, keeps the plan through a resume, and never changes training."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning")

from lightning_models import LinearRegression  # noqa: E402

from advisor import AdvisorCallback, LrPlan, PlateauRule  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _data(batch_size: int = 64, shuffle: bool = True) -> tuple[DataLoader, DataLoader]:
    """A nonlinear regression: SGD at a high rate settles on a noise floor that a lower rate
    goes below, the classic step-decay curve."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(640, 8, generator=g)
    y = torch.sin(2 * x).sum(1, keepdim=True) + 0.1 * torch.randn(640, 1, generator=g)
    train = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=batch_size, shuffle=shuffle,
                       generator=torch.Generator().manual_seed(1))
    return train, DataLoader(TensorDataset(x[512:], y[512:]), batch_size=128)


class Net(LinearRegression):
    """The shared regression's steps on a small MLP, with SGD+momentum and a scheduler."""

    def __init__(self, lr: float, scheduler, interval: str = "epoch") -> None:
        super().__init__(in_features=8, lr=lr)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
        self.scheduler, self.interval = scheduler, interval

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.scheduler is None:
            return opt
        config = {"scheduler": self.scheduler(opt), "interval": self.interval}
        if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val_loss"
        return {"optimizer": opt, "lr_scheduler": config}


class Rates(pl.Callback):
    """The rate each epoch starts with, and every rate the optimizer stepped with."""

    def __init__(self) -> None:
        self.epoch_rates: list[float] = []
        self.step_rates: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step_rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def _fit(model, callbacks, max_epochs: int, shuffle: bool = True, **kwargs):
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, **kwargs)
    trainer.fit(model, *_data(shuffle=shuffle))
    return trainer


def test_multisteplr_plateau_before_its_drop_waits_and_keeps_the_best_after_it():
    rates = Rates()
    callback = AdvisorCallback("val_loss", train_metric="train_loss", action="stop",
                               log_to_mlflow=False)
    drop = 40  # late enough that without the plan the plateau before it is a stop
    _fit(Net(0.1, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [drop], 0.1)),
         [callback, rates], max_epochs=60)
    plan = callback.advisor.lr_plan
    assert isinstance(plan, LrPlan) and plan.source == "MultiStepLR"
    epochs = np.arange(1, len(rates.epoch_rates) + 1)
    np.testing.assert_allclose(plan.rates_at(epochs), rates.epoch_rates, rtol=1e-9)
    history = callback.advisor.history.values("val_loss")
    stopped_at = callback.stopped_step or 60
    assert stopped_at > drop + 1, callback.stop_reason
    assert callback.advice.best_step > drop + 1  # the best is one the drop brought
    assert np.nanmin(history[drop + 1:]) < np.nanmin(history[:drop])


@pytest.mark.parametrize("name", ["OneCycleLR", "warmup_cosine"])
def test_step_interval_schedules_are_planned_as_they_run_and_training_is_unchanged(name):
    epochs, steps = 8, 8 * 8
    factory = {
        "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 0.1, total_steps=steps),
        "warmup_cosine": lambda o: torch.optim.lr_scheduler.LambdaLR(o, functools.partial(
            _warmup_cosine, warmup=10, total=steps)),
    }[name]
    with_rates, without_rates = Rates(), Rates()
    callback = AdvisorCallback("val_loss", log_to_mlflow=False)
    with_advisor = Net(0.05, factory, "step")
    _fit(with_advisor, [callback, with_rates], epochs, shuffle=False)
    alone = Net(0.05, factory, "step")
    _fit(alone, [without_rates], epochs, shuffle=False)
    # planning changed nothing: the same rates at every step, the same weights at the end
    assert with_rates.step_rates == without_rates.step_rates
    for a, b in zip(with_advisor.parameters(), alone.parameters(), strict=True):
        assert torch.equal(a, b)
    plan = callback.advisor.lr_plan
    np.testing.assert_allclose(plan.rates_at(np.arange(1, epochs + 1)), with_rates.epoch_rates,
                               rtol=0.006)


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_reduce_on_plateau_is_awaited_until_its_reductions_stop_paying():
    rates = Rates()
    # no train metric: the stop this test is about is the plateau's, not overfitting's
    callback = AdvisorCallback("val_loss", action="stop", log_to_mlflow=False)
    _fit(Net(0.05, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, factor=0.3, patience=3, min_lr=1e-5)), [callback, rates], max_epochs=150)
    assert isinstance(callback.advisor.lr_plan, PlateauRule)
    reductions = [e + 1 for e in range(1, len(rates.epoch_rates))
                  if rates.epoch_rates[e] < rates.epoch_rates[e - 1]]
    assert reductions, "the case needs a run whose rate was reduced"
    assert callback.stopped_step is not None and callback.stopped_step < 150
    assert callback.stopped_step > reductions[0]  # never before the first reduction
    schedule = next(ev for ev in callback.advice.evidence if ev.detector == "schedule")
    assert callback.advice.verdict.value == "plateau"
    assert "stopped paying" in schedule.summary or "min_lr" in schedule.summary
    assert schedule.details["decay_pending"] is False
    # every plateau judged before the last reduction waited for the scheduler
    early = [row for row in callback.history if row["step"] < reductions[-1]]
    assert not any(row["should_stop"] for row in early)


class Interrupt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == self.epoch:
            trainer.should_stop = True


def test_a_resume_mid_run_keeps_the_plan(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    def schedule(o):
        return torch.optim.lr_scheduler.MultiStepLR(o, [12, 18], 0.1)

    whole = AdvisorCallback("val_loss", log_to_mlflow=False)
    _fit(Net(0.05, schedule), [whole], max_epochs=24)

    first = AdvisorCallback("val_loss", log_to_mlflow=False)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = pl.Trainer(max_epochs=24, callbacks=[first, checkpoints, Interrupt(15)],
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(Net(0.05, schedule), *_data())
    assert trainer.current_epoch == 15
    resumed = AdvisorCallback("val_loss", log_to_mlflow=False)
    rates = Rates()
    trainer = pl.Trainer(max_epochs=24, callbacks=[resumed, rates], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Net(0.05, schedule), *_data(), ckpt_path=str(tmp_path / "last.ckpt"))
    plan = resumed.advisor.lr_plan
    epochs = np.arange(1, 25)
    np.testing.assert_allclose(plan.rates_at(epochs), whole.advisor.lr_plan.rates_at(epochs))
    np.testing.assert_allclose(plan.rates_at(np.arange(16, 25)), rates.epoch_rates)
    assert len(resumed.advisor.history) == 24  # the checks before the resume are kept


def test_the_plan_is_logged_to_mlflow_and_replayed_from_it(mlflow_server):
    """The callback logs the plan (``advisor/planned_lr``, tag ``advisor.lr_plan``) next to
    the trainer's metrics, so `advisor analyze` replays the run with it and agrees with the
    callback (without the plan, the replay would stop before the drop)."""
    import uuid

    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from advisor.report import analyze_mlflow_run

    logger = MLFlowLogger(experiment_name=f"plan-{uuid.uuid4().hex[:8]}",
                          tracking_uri=mlflow_server.url)
    callback = AdvisorCallback("val_loss", train_metric="train_loss", action="stop")
    trainer = pl.Trainer(max_epochs=60, callbacks=[callback], logger=logger,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Net(0.1, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [40], 0.1)),
                *_data())
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(logger.run_id)
    assert run.data.tags["advisor.lr_plan"] == "MultiStepLR"
    planned = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                   "advisor/planned_lr")}
    assert planned == pytest.approx({1: 0.1, 41: 0.01})  # the points where the rate changes
    analysis = analyze_mlflow_run(client, run, "val_loss", "min", "train_loss")
    assert analysis.advice.step == callback.advice.step
    assert analysis.advice.verdict == callback.advice.verdict
    assert analysis.advice.best_step == callback.advice.best_step
