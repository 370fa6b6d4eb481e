"""Integrations: the Lightning callback (and, to come, the Optuna pruner).

Imported lazily: ``import advisor`` does not import Lightning, torch or MLflow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdvisorCallback"]


def __getattr__(name: str) -> Any:
    if name == "AdvisorCallback":
        from .lightning import AdvisorCallback

        return AdvisorCallback
    raise AttributeError(f"module 'advisor.callbacks' has no attribute {name!r}")
