"""The advice made visible: summaries for the MLflow run page (plots and reports to come)."""

from .markdown import advice_history_row, advice_markdown

__all__ = ["advice_history_row", "advice_markdown"]
