"""The advice made visible: the run description (markdown), a plot and an HTML report per run,
and an experiment dashboard.

matplotlib is imported only when a plot is drawn (:func:`run_plot_png`).
"""

from .analysis import RunAnalysis, analyze_run
from .experiment import experiment_html
from .html import run_report_html
from .markdown import advice_history_row, advice_markdown
from .plots import run_plot_png

__all__ = ["RunAnalysis", "advice_history_row", "advice_markdown", "analyze_run",
           "experiment_html", "run_plot_png", "run_report_html"]
