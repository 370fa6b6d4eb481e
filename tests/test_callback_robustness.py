"""The callback in trainer configurations users run into: odd budgets, fitting on, validating
after a fit, no validation, and settings that are wrong (real Lightning fits on CPU)."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
from lightning_models import LinearRegression, loaders

from advisor import AdvisorCallback, AdvisorWarning


def _trainer(callback: AdvisorCallback, **kwargs) -> pl.Trainer:
    return pl.Trainer(callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **kwargs)


def _advisor_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, AdvisorWarning)]


def test_settings_the_callback_takes_from_the_trainer_or_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError, match="max_steps=100"):
        AdvisorCallback("val_loss", max_steps=100)
    with pytest.raises(ValueError, match="unit='step'"):
        AdvisorCallback("val_loss", unit="step")
    with pytest.raises(ValueError, match="tracking_uri must be a non-empty string or None, but "
                                         "got 123"):
        AdvisorCallback("val_loss", tracking_uri=123)
    with pytest.raises(ValueError, match="unknown tracking URI scheme 'nosuchscheme'"):
        AdvisorCallback("val_loss", tracking_uri="nosuchscheme://x")
    with pytest.raises(ValueError, match="experiment_name"):
        AdvisorCallback("val_loss", experiment_name=None)
    with pytest.raises(TypeError, match="log_to_mlflow must be True or False, but got 'no'"):
        AdvisorCallback("val_loss", log_to_mlflow="no")
    with pytest.raises(TypeError, match="min_checks must be a whole number, but got '5'"):
        AdvisorCallback("val_loss", min_checks="5")
    with pytest.raises(TypeError, match="decay must be a finite real number, but got nan"):
        AdvisorCallback("val_loss", decay=float("nan"))
    with pytest.raises(ValueError, match="train_metric must be the name of a metric other than"):
        AdvisorCallback("val_loss", train_metric="val_loss")


def test_a_step_budget_with_checks_per_epoch_is_the_epoch_of_the_last_step():
    train, val = loaders()  # 3 batches an epoch
    callback = AdvisorCallback("val_loss", "min", "train_loss", log_to_mlflow=False)
    _trainer(callback, max_epochs=-1, max_steps=30).fit(LinearRegression(), train, val)
    assert callback.budget == callback.advisor.max_steps == 10.0
    assert [row["step"] for row in callback.history] == list(range(1, 11))
    assert callback.advisor.lr_plan is not None  # planned up to the budget
    # max_steps ends training before max_epochs: the earlier end is the budget
    callback = AdvisorCallback("val_loss", log_to_mlflow=False)
    _trainer(callback, max_epochs=50, max_steps=12, accumulate_grad_batches=2).fit(
        LinearRegression(), train, val)
    assert callback.budget == 6.0  # 2 optimizer steps an epoch


def test_a_fit_with_no_epochs_or_no_validation_goes_on_and_says_there_is_no_advice():
    train, val = loaders()
    for kwargs, loaders_ in (({"max_epochs": 0}, (train, val)),
                             ({"max_epochs": 3, "limit_val_batches": 0}, (train, val)),
                             ({"max_epochs": 3}, (train,))):
        callback = AdvisorCallback("val_loss", log_to_mlflow=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _trainer(callback, **kwargs).fit(LinearRegression(), *loaders_)
        messages = _advisor_warnings(caught)
        assert callback.advice is None
        assert len(messages) == 1 and "gave no advice" in messages[0], (kwargs, messages)


def test_fitting_on_with_the_same_trainer_continues_the_history():
    train, val = loaders()
    callback = AdvisorCallback("val_loss", log_to_mlflow=False)
    trainer = _trainer(callback, max_epochs=4)
    model = LinearRegression()
    trainer.fit(model, train, val)
    first = callback.advice
    trainer.fit(model, train, val)  # max_epochs reached: nothing to train, nothing lost
    assert callback.advice is first and len(callback.history) == 4
    trainer.fit_loop.max_epochs = 8
    trainer.fit(model, train, val)
    assert [row["step"] for row in callback.history] == list(range(1, 9))
    assert callback.budget == callback.advisor.max_steps == 8.0
    assert callback.advisor.history.steps.size == 8  # judged on the whole run


def test_validating_after_the_fit_does_not_change_the_advice():
    train, val = loaders()
    for kwargs in ({}, {"val_check_interval": 0.5}):
        callback = AdvisorCallback("val_loss", log_to_mlflow=False)
        trainer = _trainer(callback, max_epochs=4, **kwargs)
        model = LinearRegression()
        trainer.fit(model, train, val)
        rows, advice = list(callback.history), callback.advice
        _, other = loaders(batch_size=16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.validate(model, other, verbose=False)
        assert callback.history == rows and callback.advice is advice
        assert not _advisor_warnings(caught)
        assert not callback._check_pending


def test_a_callback_state_it_cannot_restore_costs_the_history_not_the_training(tmp_path):
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    train, val = loaders()
    saver = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = AdvisorCallback("val_loss", log_to_mlflow=False)
    pl.Trainer(callbacks=[first, saver], logger=False, enable_progress_bar=False,
               enable_model_summary=False, max_epochs=3).fit(LinearRegression(), train, val)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=False)
    key = next(k for k in checkpoint["callbacks"] if k.startswith("AdvisorCallback"))
    checkpoint["callbacks"][key]["advisor"] = {"version": 999, "settings": "from elsewhere"}
    torch.save(checkpoint, tmp_path / "edited.ckpt")

    callback = AdvisorCallback("val_loss", log_to_mlflow=False)
    trainer = _trainer(callback, max_epochs=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(LinearRegression(), train, val, ckpt_path=tmp_path / "edited.ckpt")
    assert trainer.current_epoch == 5  # the training went on to its budget
    messages = _advisor_warnings(caught)
    assert len(messages) == 1 and "could not restore its state" in messages[0], messages
    assert [row["step"] for row in callback.history] == [4, 5]  # advice from the resume on
    strict = AdvisorCallback("val_loss", log_to_mlflow=False, strict=True)
    with pytest.raises(Exception, match="version|state"):
        _trainer(strict, max_epochs=5).fit(LinearRegression(), train, val,
                                           ckpt_path=tmp_path / "edited.ckpt")
