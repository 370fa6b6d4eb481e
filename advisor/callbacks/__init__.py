"""Integrations: the Lightning callbacks and the Optuna pruner.

Imported lazily: ``import advisor`` does not import Lightning, torch, MLflow or Optuna.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdvisorCallback", "AdvisorPruner", "AdvisorPruningCallback", "advise_trial"]

_LAZY = {
    "AdvisorCallback": "lightning",
    "AdvisorPruningCallback": "_pruning_callback",
    "AdvisorPruner": "optuna",
    "advise_trial": "optuna",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'advisor.callbacks' has no attribute {name!r}")
