"""A binary task's decision threshold is chosen on validation, by the rule configured."""

from __future__ import annotations

import numpy as np
import pytest

from satsweep.config import load_run_config
from satsweep.errors import UserError
from satsweep.schema import ThresholdConfig
from satsweep.threshold import choose_threshold, decision_metrics, scores_at

# 10 validation images: 4 positives scored 0.9, 0.7, 0.45, 0.3; negatives below 0.4 but one
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.7, 0.45, 0.3, 0.35, 0.2, 0.1, 0.05, 0.6, 0.02])


def test_f1_picks_the_threshold_that_separates_best_nearest_one_half() -> None:
    chosen = choose_threshold(LABELS, SCORES, ThresholdConfig(metric="f1", target=None))
    # at 0.21-0.30 all four positives and two negatives (0.35, 0.6) are called positive:
    # F1 0.8, the best; of the thresholds tied at it, the one nearest 0.5
    assert chosen == 0.3
    assert scores_at(LABELS, SCORES, chosen)["f1"] == pytest.approx(0.8)
    assert scores_at(LABELS, SCORES, 0.5)["f1"] == pytest.approx(4 / 7)


def test_a_target_recall_keeps_the_highest_threshold_that_reaches_it() -> None:
    chosen = choose_threshold(LABELS, SCORES, ThresholdConfig(metric="recall", target=1.0))
    assert chosen == 0.3  # the lowest-scored positive


def test_a_target_precision_takes_the_lowest_threshold_that_reaches_it() -> None:
    chosen = choose_threshold(LABELS, SCORES, ThresholdConfig(metric="precision", target=1.0))
    assert chosen == 0.61  # above the negative at 0.6
    assert scores_at(LABELS, SCORES, chosen) == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}


def test_an_unreachable_target_falls_back_to_one_half(caplog) -> None:
    never = np.array([0.1, 0.9, 0.2, 0.8])
    chosen = choose_threshold(
        np.array([1, 0, 1, 0]), never, ThresholdConfig(metric="precision", target=0.9)
    )
    assert chosen == 0.5 and "no threshold reaches precision 0.900" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["trainer.threshold.metric=recall"], "trainer.threshold.target"),
        (["trainer.threshold.target=0.9"], "metric=recall or precision"),
        (["trainer.threshold.metric=auc"], "trainer.threshold.metric"),
    ],
)
def test_a_threshold_rule_without_its_target_is_one_line(overrides, named) -> None:
    with pytest.raises(UserError, match=named):
        load_run_config(overrides)


def test_the_threshold_comes_from_validation_alone() -> None:
    """Test labels can change at will: the threshold does not move, only test's scores."""
    rule = ThresholdConfig(metric="f1", target=None)
    test_scores = np.array([0.8, 0.35, 0.6, 0.1, 0.55, 0.25])
    test_labels = np.array([1, 1, 0, 0, 1, 0])
    decided = decision_metrics(rule, (LABELS, SCORES), (test_labels, test_scores))
    flipped = decision_metrics(rule, (LABELS, SCORES), (1 - test_labels, test_scores))
    assert decided["threshold"] == flipped["threshold"] == 0.3
    assert decided["val_f1_at_threshold"] == flipped["val_f1_at_threshold"] == pytest.approx(0.8)
    assert decided["test_f1_at_threshold"] != flipped["test_f1_at_threshold"]
