"""training-advisor: tells you when a training run is done, and why.

The core (this package's top level) is pure numpy/scipy/pandas: importing it does not import
torch, Lightning, MLflow or Optuna. Integrations live in :mod:`advisor.callbacks` and are
imported lazily.
"""

from __future__ import annotations

from .advice import Advice, Evidence, Forecast, Verdict
from .advisor import Advisor, MetricNotFoundError
from .detectors.plan import LrPlan, PlateauRule
from .history import AdvisorWarning, MetricHistory
from .replay import replay

__version__ = "0.1.0"

__all__ = [
    "Advice",
    "AdvisorCallback",
    "AdvisorPruner",
    "AdvisorPruningCallback",
    "Advisor",
    "AdvisorWarning",
    "Evidence",
    "Forecast",
    "LrPlan",
    "MetricHistory",
    "MetricNotFoundError",
    "PlateauRule",
    "Verdict",
    "advise_trial",
    "replay",
]

_LAZY = {
    "AdvisorCallback": "lightning",
    "AdvisorPruningCallback": "_pruning_callback",
    "AdvisorPruner": "optuna",
    "advise_trial": "optuna",
}


def __getattr__(name: str) -> object:
    """Integrations (Lightning, Optuna) are imported on first use, so ``import advisor`` stays
    light and works without them."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".callbacks.{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'advisor' has no attribute {name!r}")
