"""Optuna's plots of a sweep, for its parent run: a PNG each, and one interactive page.

Every PNG comes from ``optuna.visualization.matplotlib`` and renders inline in the
MLflow UI. The interactive versions (``optuna.visualization``, Plotly) share one HTML
page that embeds plotly.js once: one file per plot would carry its own 4.6 MB copy.
The importances are fANOVA's, as in the lessons, so the plot and the words agree;
the slice and contour plots show the parameters that mattered most.
"""

from __future__ import annotations

import html
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from satsweep.search.lessons import MIN_FOR_DIRECTION, param_importances
from satsweep.tracking import Tracker

LOG = logging.getLogger(__name__)
SLICED = 3  # the slice plot shows this many of the most important parameters
INTERACTIVE_PAGE = "interactive.html"


def plot_requests(study: optuna.Study, objectives: list[str]) -> dict[str, dict[str, Any]]:
    """Each plot to draw, by Optuna's name for it, with its options."""
    single = len(objectives) == 1
    target = None if single else (lambda t: t.values[0])
    named = {"target_name": objectives[0], "target": target}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    plots: dict[str, dict[str, Any]] = {
        "optimization_history": named,
        "param_importances": {**named, "evaluator": evaluator},
        "parallel_coordinate": named,
    }
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = {}
    if not single:
        plots["pareto_front"] = {"target_names": objectives}
        return plots
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = list(param_importances(study)) if len(complete) >= MIN_FOR_DIRECTION else []
    if ranked:
        plots["slice"] = {**named, "params": ranked[:SLICED]}
    if len(ranked) >= 2:
        plots["contour"] = {**named, "params": ranked[:2]}
    return plots


def log_plots(study: optuna.Study, objectives: list[str], tracker: Tracker, run_id: str) -> None:
    """Draw the sweep's plots into ``plots/`` of ``run_id``; a plot without data is skipped."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # "no complete trials" is not news here
    try:
        with tempfile.TemporaryDirectory() as folder:
            _draw(study, plot_requests(study, objectives), Path(folder))
            tracker.log_directory(run_id, Path(folder), "plots")
    finally:
        optuna.logging.set_verbosity(verbosity)


def _draw(study: optuna.Study, plots: dict[str, dict[str, Any]], folder: Path) -> None:
    import matplotlib.pyplot as plt  # Optuna's PNG plots draw through pyplot
    from optuna import visualization as html_plots
    from optuna.visualization import matplotlib as png_plots

    sections: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature notes
        for name, options in plots.items():
            try:
                figure = getattr(html_plots, f"plot_{name}")(study, **options)
                axes = getattr(png_plots, f"plot_{name}")(study, **options)
            except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as error:
                LOG.info("plot %s skipped: %s", name, error)
                continue
            drawn = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            drawn.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(drawn)
            embed: bool | str = not sections  # plotly.js once, with the first figure
            sections.append(figure.to_html(full_html=False, include_plotlyjs=embed))
    if sections:
        (folder / INTERACTIVE_PAGE).write_text(_page(study.study_name, sections))


def _page(title: str, sections: list[str]) -> str:
    body = "\n".join(f"<section>{section}</section>" for section in sections)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}: '
        f"Optuna plots</title></head><body>{body}</body></html>"
    )
