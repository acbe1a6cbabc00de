"""A run's figures: its test confusion matrix and error analysis, drawn from its test predictions.

They cost about a second at 30 classes, most of it matplotlib laying out text.
Every run logs its test predictions, so the figures can also be drawn later: a
sweep draws them once, for its best trial, when it ends, instead of for every
trial that led on the way. Nothing here imports TensorFlow, so the sweep's
launcher, which trains nothing, draws them without paying for that import.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from satsweep.analysis.confusion import confusion_figure
from satsweep.analysis.errors import ERROR_ANALYSIS, analyse_errors
from satsweep.data import Dataset
from satsweep.metrics import FINAL_VAL, Evaluation, evaluate_predictions
from satsweep.tracking import Tracker

TEST_PROBABILITIES = "test_probabilities.npy"  # every run's, in test-split order
CONFUSION_FIGURE = "confusion_matrix.png"


def log_test_probabilities(tracker: Tracker, run_id: str, probabilities: np.ndarray) -> None:
    """The run's test predictions (one row of class probabilities per test image)."""
    buffer = io.BytesIO()
    np.save(buffer, probabilities, allow_pickle=False)
    tracker.log_bytes(run_id, buffer.getvalue(), TEST_PROBABILITIES)


def log_figures(
    tracker: Tracker,
    run_id: str,
    dataset: Dataset,
    test: Evaluation,
    error_analysis: bool,
    threshold: float = 0.5,
) -> None:
    """The confusion matrix figure and, with ``error_analysis``, the error analysis's figures.

    ``threshold``: a binary task's decision threshold (chosen on validation), marked on
    its curves.
    """
    tracker.log_figure(
        run_id, confusion_figure(test.confusion, dataset.class_names), CONFUSION_FIGURE
    )
    if not error_analysis:
        return
    split = dataset.test
    analysis = analyse_errors(
        split.images,
        split.labels,
        test.probabilities,
        dataset.class_names,
        test.per_class,
        threshold=threshold,
    )
    for name, figure in analysis.figures.items():
        tracker.log_figure(run_id, figure, f"{ERROR_ANALYSIS}/{name}")


def draw_missing_figures(
    tracker: Tracker, run_id: str, load: Callable[[], Dataset], error_analysis: bool
) -> bool:
    """Draw the figures of a run that skipped them, from its logged test predictions.

    ``load`` gives the run's dataset; it is called only when there is something to
    draw. Returns whether figures were drawn: not when the run has them already, or
    logged no predictions (an earlier satsweep's run).
    """
    present = {artifact.path for artifact in tracker.client.list_artifacts(run_id)}
    if CONFUSION_FIGURE in present or TEST_PROBABILITIES not in present:
        return False
    probabilities = np.load(io.BytesIO(tracker.download_bytes(run_id, TEST_PROBABILITIES)))
    dataset = load()
    test = evaluate_predictions(dataset.test.labels, probabilities, dataset.class_names)
    metrics = tracker.client.get_run(run_id).data.metrics
    threshold = metrics.get(f"{FINAL_VAL}_threshold", 0.5)
    log_figures(tracker, run_id, dataset, test, error_analysis, threshold)
    return True
