"""Error analysis of a trained model on the test split.

Everything here is computed from one set of test predictions, so it costs
milliseconds beside training: the worst mistakes as a gallery, the most confused
class pairs, per-class scores, calibration and, for binary tasks, the PR and ROC
curves with the decision threshold (chosen on validation) marked, and the positive
class's scores at every threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from satsweep.figures import mosaic, subplots, tile_centres
from satsweep.threshold import scores_at, threshold_table

ERROR_ANALYSIS = "error_analysis"  # the artifact folder of every run's analysis

GALLERY_SIZE = 36
CALIBRATION_BINS = 10


@dataclass
class ErrorAnalysis:
    """A run's error analysis: figures, tables and calibration."""

    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error_confidences: np.ndarray = field(default_factory=lambda: np.zeros(0))


def analyse_errors(
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: tuple[str, ...],
    per_class: pd.DataFrame,
    figures: bool = True,
    threshold: float = 0.5,
) -> ErrorAnalysis:
    """Which images the model gets wrong, and how sure it was: the next experiment starts here.

    ``figures=False`` keeps the tables and metrics and skips the rendering, the
    costly part, for runs nobody will look at closely (trials behind the best).
    ``threshold`` is a binary task's decision threshold, chosen on validation.
    """
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")]
    result = ErrorAnalysis(error_confidences=confidence[wrong])
    result.tables["confused_pairs.csv"] = _confused_pairs(labels, predicted, class_names)
    result.metrics["ece"] = expected_calibration_error(labels, probabilities)
    if len(class_names) == 2:
        _binary_curves(result, labels, probabilities[:, 1], figures, threshold)
    if figures:
        result.figures["misclassified.png"] = _gallery(
            images[worst[:GALLERY_SIZE]],
            labels[worst],
            predicted[worst],
            confidence[worst],
            class_names,
        )
        result.figures["per_class_scores.png"] = _per_class_chart(per_class)
        result.figures["calibration.png"] = _calibration(
            labels, probabilities, result.metrics["ece"]
        )
    return result


def _gallery(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    class_names: Sequence[str],
) -> Figure:
    columns = min(6, max(1, len(images)))
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axis = subplots(figsize=(2.2 * columns, 2.4 * rows))
    axis.axis("off")
    if not len(images):
        axis.text(0.5, 0.5, "no misclassified test image", ha="center")
        return figure
    height, width = images.shape[1:3]
    gap = (height // 3, max(1, width // 16))  # room above each image for its caption
    chunks = [images[start : start + columns] for start in range(0, len(images), columns)]
    axis.imshow(mosaic(chunks, columns, gap))
    centres = tile_centres(columns, width, gap[1])
    for index in range(len(images)):
        row, column = divmod(index, columns)
        axis.text(
            centres[column],
            row * (height + gap[0]) - 1,
            f"{class_names[labels[index]]}\n-> {class_names[predicted[index]]} "
            f"({confidence[index]:.2f})",
            fontsize=7,
            ha="center",
            va="bottom",
        )
    axis.set_ylim(rows * (height + gap[0]) - gap[0] - 0.5, -gap[0] - 0.5)
    figure.suptitle("Misclassified test images, most confident first (true -> predicted)")
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    return figure


def _confused_pairs(
    labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    wrong = predicted != labels
    pairs = pd.DataFrame(
        {
            "true": np.asarray(class_names)[labels[wrong]],
            "predicted": np.asarray(class_names)[predicted[wrong]],
        }
    )
    counts = pairs.value_counts().rename("count").reset_index()
    counts["share_of_errors"] = counts["count"] / max(1, int(wrong.sum()))
    return counts


def _per_class_chart(per_class: pd.DataFrame) -> Figure:
    figure, axis = subplots(figsize=(max(6.0, 0.35 * len(per_class) + 2), 4))
    positions = np.arange(len(per_class))
    for offset, metric in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        axis.bar(positions + offset, per_class[metric], width=0.27, label=metric)
    axis.set_xticks(positions, per_class["class"], rotation=90, fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_title("Per-class precision, recall and F1 on the test split")
    axis.legend()
    figure.tight_layout()
    return figure


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    total = 0.0
    for b in range(CALIBRATION_BINS):
        members = bins == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(labels))


def _calibration(labels: np.ndarray, probabilities: np.ndarray, ece: float) -> Figure:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    accuracy = [
        correct[bins == b].mean() if (bins == b).any() else 0 for b in range(CALIBRATION_BINS)
    ]
    figure, axis = subplots(figsize=(4.5, 4.5))
    axis.bar(
        edges[:-1],
        accuracy,
        width=1 / CALIBRATION_BINS,
        align="edge",
        edgecolor="k",
        label="accuracy",
    )
    axis.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Reliability diagram (ECE {ece:.3f})")
    axis.legend()
    return figure


def _binary_curves(
    result: ErrorAnalysis, labels: np.ndarray, scores: np.ndarray, figures: bool, threshold: float
) -> None:
    """The test split at every threshold (a table to read, not to choose from) and the curves."""
    if len(np.unique(labels)) < 2:
        return
    result.tables["threshold_sweep.csv"] = pd.DataFrame(threshold_table(labels, scores))
    if figures:
        _curve_figures(result, labels, scores, threshold)


def _curve_figures(
    result: ErrorAnalysis, labels: np.ndarray, scores: np.ndarray, threshold: float
) -> None:
    precision, recall, _ = precision_recall_curve(labels, scores)
    false_positive, true_positive, _ = roc_curve(labels, scores)
    chosen = scores_at(labels, scores, threshold)
    negatives = labels == 0
    chosen_fpr = float((scores[negatives] >= threshold).mean()) if negatives.any() else 0.0
    marks = {
        "pr_curve.png": (chosen["recall"], chosen["precision"]),
        "roc_curve.png": (chosen_fpr, chosen["recall"]),
    }
    for name, (x, y, xlabel, ylabel) in {
        "pr_curve.png": (recall, precision, "recall", "precision"),
        "roc_curve.png": (
            false_positive,
            true_positive,
            "false positive rate",
            "true positive rate",
        ),
    }.items():
        figure, axis = subplots(figsize=(4.5, 4.5))
        axis.plot(x, y)
        axis.plot(*marks[name], "o", color="crimson", label=f"threshold {threshold:.2f}")
        axis.legend(loc="lower left" if name == "pr_curve.png" else "lower right")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.set_title(name.removesuffix(".png").replace("_", " ") + " (test)")
        result.figures[name] = figure
