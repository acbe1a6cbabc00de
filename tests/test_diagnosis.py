"""The "what to try next" rules on synthetic learning curves and confusion matrices."""

from __future__ import annotations

import numpy as np

from satsweep.analysis.diagnosis import Evidence, diagnose
from satsweep.analysis.errors import expected_calibration_error
from satsweep.config import load_run_config

CLASSES = ("a", "b", "c", "d")


OVERFITTING = {
    "loss": [1.2, 0.6, 0.3, 0.15, 0.08],
    "val_loss": [1.1, 0.8, 0.85, 1.0, 1.2],
    "accuracy": [0.5, 0.8, 0.92, 0.97, 0.99],
    "val_accuracy": [0.5, 0.65, 0.66, 0.64, 0.62],
}


def _evidence(**changes) -> Evidence:
    """A healthy run: curves that fall together, balanced classes, spread-out errors."""
    healthy = {
        "history": {
            "loss": [1.3, 0.9, 0.7, 0.6, 0.55],
            "val_loss": [1.25, 0.95, 0.78, 0.7, 0.68],
            "accuracy": [0.40, 0.62, 0.72, 0.78, 0.80],
            "val_accuracy": [0.42, 0.60, 0.70, 0.74, 0.76],
        },
        "train_counts": [50, 50, 50, 50],
        "test_recall": [0.8, 0.75, 0.78, 0.7],
        "confusion": np.array([[8, 1, 0, 1], [1, 7, 1, 1], [0, 1, 8, 1], [1, 1, 1, 7]]),
        "error_confidences": [0.4, 0.5, 0.45, 0.55],
        "class_names": CLASSES,
        "class_weights": False,
        "test_f1_macro": 0.75,
        "floor_f1_macro": 0.4,
        "augment": load_run_config([]).trainer.augment,
        "capacity_knobs": ("model.stages", "model.width"),  # the default model, a ResNet
    }
    return Evidence(**{**healthy, **changes})


def _rules(evidence: Evidence) -> set[str]:
    return {finding.rule for finding in diagnose(evidence)}


def test_healthy_run_raises_no_alarm() -> None:
    assert _rules(_evidence()) == set()


def test_overfitting_is_detected() -> None:
    findings = diagnose(_evidence(history=OVERFITTING))
    assert [f.rule for f in findings] == ["overfitting"]
    assert "model.dropout" in findings[0].config_keys


def test_underfitting_is_detected() -> None:
    history = {
        "loss": [1.386, 1.380, 1.371, 1.366, 1.36],
        "val_loss": [1.386, 1.382, 1.376, 1.37, 1.366],
        "accuracy": [0.25, 0.27, 0.28, 0.3, 0.31],
        "val_accuracy": [0.25, 0.26, 0.28, 0.29, 0.3],
    }
    findings = diagnose(_evidence(history=history))
    assert [f.rule for f in findings] == ["underfitting"]
    assert "optimizer.lr" in findings[0].config_keys
    # it names the knobs of the model trained: a ResNet has stages, not blocks
    assert "model.stages" in findings[0].config_keys
    assert "model.blocks" not in findings[0].config_keys


def test_learning_rate_too_high_is_detected() -> None:
    diverging = {
        "loss": [1.4, 2.5, 6.0, 14.0],
        "accuracy": [0.3, 0.25, 0.25, 0.25],
        "val_loss": [1.5, 3.0, 7.0, 15.0],
        "val_accuracy": [0.3, 0.25, 0.25, 0.25],
    }
    oscillating = {
        "loss": [1.2, 0.7, 1.1, 0.6, 1.0, 0.65, 1.05],
        "accuracy": [0.5, 0.75, 0.7, 0.8, 0.72, 0.8, 0.74],
        "val_loss": [1.1, 0.8, 1.0, 0.75, 0.9, 0.8, 0.95],
        "val_accuracy": [0.5, 0.7, 0.65, 0.72, 0.7, 0.72, 0.68],
    }
    for history in (diverging, oscillating):
        assert "learning rate too high" in _rules(_evidence(history=history))
    nan = {"loss": [1.3, float("nan")], "accuracy": [0.3, 0.25]}
    assert "learning rate too high" in _rules(_evidence(history=nan))


def test_imbalance_with_low_minority_recall_is_detected() -> None:
    findings = diagnose(
        _evidence(train_counts=[200, 200, 200, 20], test_recall=[0.9, 0.85, 0.9, 0.1])
    )
    assert [f.rule for f in findings] == ["class imbalance"]
    assert findings[0].config_keys[0] == "trainer.class_weights"
    # imbalance that the model copes with is no alarm
    assert _rules(_evidence(train_counts=[200, 200, 200, 20])) == set()


def test_confident_confusions_on_few_pairs_are_detected() -> None:
    confusion = np.array([[5, 6, 0, 0], [5, 5, 0, 0], [0, 0, 9, 1], [0, 0, 0, 10]])
    findings = diagnose(_evidence(confusion=confusion, error_confidences=[0.9] * 12))
    assert [f.rule for f in findings] == ["confident confusions"]
    assert findings[0].config_keys == ("data.classes=[a,b]",)


def test_expected_calibration_error() -> None:
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(labels, perfect) == 0.0
    overconfident = np.array([[0.95, 0.05], [0.95, 0.05], [0.95, 0.05], [0.95, 0.05]])
    assert abs(expected_calibration_error(labels, overconfident) - 0.45) < 1e-9


def test_validation_at_chance_while_training_learns_names_bn_momentum() -> None:
    history = {
        "loss": [1.3, 1.0, 0.8, 0.6, 0.5],
        "val_loss": [1.5, 1.6, 1.7, 1.6, 1.7],
        "accuracy": [0.4, 0.55, 0.65, 0.75, 0.8],
        "val_accuracy": [0.25, 0.26, 0.25, 0.27, 0.25],
    }
    findings = {f.rule: f for f in diagnose(_evidence(history=history, test_f1_macro=0.2))}
    assert "validation at chance" in findings
    assert findings["validation at chance"].config_keys[0] == "model.bn_momentum"


def test_weak_model_near_the_floor_is_flagged() -> None:
    assert "weak model" in _rules(_evidence(test_f1_macro=0.42, floor_f1_macro=0.4))
    assert "weak model" not in _rules(_evidence(test_f1_macro=0.6, floor_f1_macro=0.4))
    # no floor known: chance is the yardstick (4 classes: 0.25)
    assert "weak model" in _rules(_evidence(test_f1_macro=0.3, floor_f1_macro=None))


def test_overfitting_advice_skips_augmentation_already_on() -> None:
    (finding,) = diagnose(_evidence(history=OVERFITTING))
    assert "trainer.augment.flip" not in finding.config_keys  # on by default
    assert "trainer.augment.mixup" in finding.config_keys


def test_binary_errors_on_one_side_point_at_the_threshold() -> None:
    binary = {
        "class_names": ("no_damage", "damage"),
        "train_counts": [100, 200],
        "test_recall": [0.95, 0.8],
    }
    missed = np.array([[38, 1], [9, 52]])  # 9 of 10 errors: damage called no_damage
    findings = diagnose(_evidence(**binary, confusion=missed))
    assert [f.rule for f in findings] == ["errors on one side"]
    assert "9 of 10 errors are missed damage" in findings[0].message
    assert "trainer.threshold.metric=recall" in findings[0].message
    false_alarms = np.array([[30, 8], [1, 61]])
    (finding,) = diagnose(_evidence(**binary, confusion=false_alarms))
    assert "8 of 9 errors are false alarms" in finding.message
    balanced = np.array([[35, 3], [3, 59]])
    assert _rules(_evidence(**binary, confusion=balanced)) == set()
