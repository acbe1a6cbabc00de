"""Final evaluation metrics from predicted probabilities.

Multi-class tasks report accuracy and macro precision/recall/F1 (the notebooks'
score); binary tasks add precision, recall, F1, ROC-AUC and PR-AUC for the
positive class (index 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scikit-learn and pandas load when a run is evaluated: the metric
    import pandas as pd  # names alone (a sweep's config check) need neither

# What a run logs, by name: sweeps choose their objectives among these.
SPLIT_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "loss")
BINARY_METRICS = ("precision", "recall", "f1", "roc_auc", "pr_auc")  # two classes only
CALIBRATION_METRICS = ("ece",)  # the error analysis's, on the test split only
RUN_METRICS = ("params_count", "epochs_run", "seconds", "fit_seconds")
# Keras reports these after every epoch, so a pruner can watch them.
EPOCH_METRICS = ("val_loss", "val_accuracy", "val_f1_macro")
# Scores that count right answers among a split's images, so the split's size bounds
# how finely they can tell two models apart.
SHARE_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", *BINARY_METRICS)


def sampling_sd(metric: str, value: float, images: int) -> float:
    """The standard error a split of ``images`` images alone gives ``metric`` at ``value``.

    A score measured on 450 images moves by about sqrt(p(1-p)/450) with the draw of
    those images: a gap finer than that says more about the split than about the
    models. Zero for metrics that are not shares of images (loss, seconds) or without
    a count.
    """
    name = metric.removeprefix("final_").removeprefix("val_").removeprefix("test_")
    if name not in SHARE_METRICS or images <= 0 or not 0.0 <= value <= 1.0:
        return 0.0
    return float(np.sqrt(value * (1.0 - value) / images))


def objective_names(binary: bool, error_analysis: bool) -> tuple[str, ...]:
    """The metrics a run logs once, which a sweep may optimise (binary runs log more)."""
    per_split = SPLIT_METRICS + (BINARY_METRICS if binary else ())
    calibration = tuple(f"test_{m}" for m in CALIBRATION_METRICS) if error_analysis else ()
    splits = tuple(f"{s}_{m}" for s in ("val", "test") for m in per_split)
    return splits + calibration + RUN_METRICS


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split, with what they were computed from."""

    metrics: dict[str, float]
    confusion: np.ndarray
    per_class: pd.DataFrame
    probabilities: np.ndarray


def evaluate_predictions(
    labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> Evaluation:
    """Every metric of one split from its labels and predicted probabilities."""
    import pandas as pd
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
    )

    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(
            f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)
        ),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "loss": float(log_loss(labels, _normalised(probabilities), labels=classes)),
    }
    if len(class_names) == 2:
        metrics.update(_binary_metrics(labels, probabilities[:, 1], predicted))
    per_class = pd.DataFrame(
        {
            "class": class_names,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )
    return Evaluation(
        metrics, confusion_matrix(labels, predicted, labels=classes), per_class, probabilities
    )


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Clipped away from 0 and summing to 1 exactly, as scikit-learn's log loss expects."""
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def _binary_metrics(
    labels: np.ndarray, positive_scores: np.ndarray, predicted: np.ndarray
) -> dict[str, float]:
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="binary", pos_label=1, zero_division=0
    )
    both_present = len(np.unique(labels)) == 2
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(labels, positive_scores)) if both_present else float("nan"),
        "pr_auc": float(average_precision_score(labels, positive_scores))
        if both_present
        else float("nan"),
    }


# Keras names the per-epoch validation curves val_*; the evaluation after training
# logs its single values under this prefix, so curves and results never share a name.
FINAL_VAL = "final_val"
RESULT_PREFIXES = (f"{FINAL_VAL}_", "test_")  # a run's evaluated results, one value each


def prefixed(metrics: dict[str, float], split: str) -> dict[str, float]:
    """Metric names with a split prefix (``val_``, ``test_``), as MLflow logs them."""
    return {f"{split}_{name}": value for name, value in metrics.items()}
