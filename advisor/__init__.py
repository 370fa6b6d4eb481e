"""training-advisor: tells you when a training run is done, and why.

The core (this package's top level) is pure numpy/scipy/pandas: importing it does not import
torch, Lightning, MLflow or Optuna. Integrations live in :mod:`advisor.callbacks` and are
imported lazily.
"""

from __future__ import annotations

from .advice import Advice, Evidence, Forecast, Verdict
from .advisor import Advisor, MetricNotFoundError
from .history import AdvisorWarning, MetricHistory
from .replay import replay

__version__ = "0.1.0"

__all__ = [
    "Advice",
    "AdvisorCallback",
    "Advisor",
    "AdvisorWarning",
    "Evidence",
    "Forecast",
    "MetricHistory",
    "MetricNotFoundError",
    "Verdict",
    "replay",
]


def __getattr__(name: str) -> object:
    """``advisor.AdvisorCallback`` is imported on first use, so ``import advisor`` stays light."""
    if name == "AdvisorCallback":
        from .callbacks.lightning import AdvisorCallback

        return AdvisorCallback
    raise AttributeError(f"module 'advisor' has no attribute {name!r}")
