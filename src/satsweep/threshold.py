"""A binary task's decision threshold: chosen on validation, applied once to test.

A model's positive-class score becomes a decision at a threshold. 0.5 is rarely
the best one on an imbalanced task, but choosing it on the test split would tune
on the data that is meant to judge the model. So the threshold is chosen on the
validation split (by the positive class's F1, or the highest threshold that keeps
a target recall, or the lowest that reaches a target precision) and test is
scored once with it, beside its score at 0.5.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from satsweep.schema import ThresholdConfig

LOG = logging.getLogger(__name__)
CANDIDATES = np.round(np.arange(0.01, 1.0, 0.01), 2)  # thresholds tried, in steps of 0.01


def scores_at(
    labels: np.ndarray, positive_scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """The positive class's precision, recall and F1 when ``score >= threshold`` is positive."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, positive_scores >= threshold, average="binary", pos_label=1, zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def threshold_table(labels: np.ndarray, positive_scores: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall and F1 of the positive class at every candidate threshold."""
    return [
        {"threshold": float(t), **scores_at(labels, positive_scores, float(t))} for t in CANDIDATES
    ]


def choose_threshold(
    labels: np.ndarray, positive_scores: np.ndarray, cfg: ThresholdConfig
) -> float:
    """The validation split's threshold for ``cfg.metric`` (ties: the one nearest 0.5)."""
    table = threshold_table(labels, positive_scores)
    if cfg.metric == "f1":
        best = max(row["f1"] for row in table)
        tied = [row["threshold"] for row in table if row["f1"] == best]
        return min(tied, key=lambda t: (abs(t - 0.5), t))
    assert cfg.target is not None  # the schema requires it for recall and precision
    meeting = [row["threshold"] for row in table if row[cfg.metric] >= cfg.target]
    if not meeting:
        LOG.warning(
            "no threshold reaches %s %.3f on validation: using 0.5 "
            "(lower trainer.threshold.target)",
            cfg.metric,
            cfg.target,
        )
        return 0.5
    # recall falls as the threshold rises: keep the highest that holds it (the most precise);
    # precision rises with it: take the lowest that reaches it (the most recall)
    return max(meeting) if cfg.metric == "recall" else min(meeting)


def decision_metrics(
    cfg: ThresholdConfig,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """The threshold chosen from ``val`` (labels, positive scores) alone, then both splits
    scored at it: ``threshold``, ``val_f1_at_threshold``, ``test_f1_at_threshold``, ..."""
    threshold = choose_threshold(*val, cfg)
    scored = {"val": scores_at(*val, threshold), "test": scores_at(*test, threshold)}
    return {
        "threshold": threshold,
        **{
            f"{split}_{name}_at_threshold": value
            for split, scores in scored.items()
            for name, value in scores.items()
        },
    }
