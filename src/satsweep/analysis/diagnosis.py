""" "What to try next": explicit rules over learning curves and test errors.

Each rule looks at one symptom the teaching notebooks taught to read, and names
the config key to change, so the advice is one override (or one sweep) away.
The thresholds are module constants: tune them here, test them in
``tests/test_diagnosis.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from satsweep.schema import AugmentConfig

OVERFIT_GAP = 0.15  # train accuracy minus val accuracy at the end
OVERFIT_VAL_LOSS_RISE = 0.10  # val loss this far above its minimum at the end
UNDERFIT_LOSS_DROP = 0.10  # loss fell by less than this fraction over training
UNDERFIT_ACCURACY = 0.6  # ... and train accuracy ended below this
DIVERGE_RISE = 0.10  # final loss this far above the first
OSCILLATION_SHARE = 0.5  # this share of epochs made the loss worse
IMBALANCE_RATIO = 3.0  # largest over smallest class in training
MINORITY_RECALL = 0.5  # smallest class's recall below this share of the mean recall
CONCENTRATED_ERRORS = 0.5  # the top 3 confused pairs hold this share of errors
CONFIDENT_ERRORS = 0.7  # mean confidence of wrong predictions
CHANCE_MULTIPLE = 1.5  # val accuracy below this multiple of chance counts as "at chance"
TRAIN_ABOVE_CHANCE = 2.0  # ... while train accuracy rose above this multiple of chance
FLOOR_MARGIN = 0.05  # test macro F1 within this of the no-learning floor is weak
ONE_SIDED_ERRORS = 0.75  # binary: this share of the errors in one direction is lopsided
ONE_SIDED_MIN_ERRORS = 4  # ... once there are this many errors to judge from


@dataclass(frozen=True)
class Finding:
    """One diagnosis rule that fired: its name, what it saw, and the keys to change."""

    rule: str
    message: str
    config_keys: tuple[str, ...]

    def markdown(self) -> str:
        """The finding as a Markdown bullet for the run's note."""
        keys = ", ".join(f"`{k}`" for k in self.config_keys)
        return f"- **{self.rule}**: {self.message} (change: {keys})"


@dataclass(frozen=True)
class Evidence:
    """What the rules look at: per-epoch curves, training class counts, test results."""

    history: dict[str, list[float]]
    train_counts: Sequence[int]
    test_recall: Sequence[float]
    confusion: np.ndarray
    error_confidences: Sequence[float]
    class_names: Sequence[str]
    class_weights: bool  # whether the loss was already weighted by class
    test_f1_macro: float
    floor_f1_macro: float | None  # the no-learning floor's test macro F1, when known
    augment: AugmentConfig  # what augmentation was already on
    capacity_knobs: tuple[str, ...]  # the keys that make this model bigger


def _overfitting(e: Evidence) -> Finding | None:
    train, val = e.history.get("accuracy", []), e.history.get("val_accuracy", [])
    val_loss = e.history.get("val_loss", [])
    gap = train[-1] - val[-1] if train and val else 0.0
    rise = (val_loss[-1] - min(val_loss)) / max(min(val_loss), 1e-9) if len(val_loss) > 2 else 0
    if gap <= OVERFIT_GAP and rise <= OVERFIT_VAL_LOSS_RISE:
        return None
    off = [
        f"trainer.augment.{name}"
        for name, on in (
            ("flip", e.augment.flip),
            ("rot90", e.augment.rot90),
            ("translate", e.augment.translate > 0),
            ("mixup", e.augment.mixup > 0),
        )
        if not on
    ]
    return Finding(
        "overfitting",
        f"train accuracy is {gap:.2f} above validation and val loss ended {rise:.0%} above "
        "its minimum: add augmentation, weight decay or dropout, or more data",
        (*off, "optimizer.weight_decay", "model.dropout", "data.max_per_class"),
    )


def _underfitting(e: Evidence) -> Finding | None:
    loss, accuracy = e.history.get("loss", []), e.history.get("accuracy", [])
    if len(loss) < 2 or not accuracy:
        return None
    drop = (loss[0] - loss[-1]) / max(loss[0], 1e-9)
    if drop >= UNDERFIT_LOSS_DROP or accuracy[-1] >= UNDERFIT_ACCURACY:
        return None
    return Finding(
        "underfitting",
        f"training loss fell only {drop:.0%} and train accuracy ended at {accuracy[-1]:.2f}: "
        "use a bigger model, a higher learning rate or more epochs",
        (*e.capacity_knobs, "optimizer.lr", "trainer.epochs"),
    )


def _learning_rate_too_high(e: Evidence) -> Finding | None:
    loss = [v for v in e.history.get("loss", []) if np.isfinite(v)]
    if len(loss) != len(e.history.get("loss", [])) and e.history.get("loss"):
        return Finding(
            "learning rate too high", "the loss became NaN or infinite", ("optimizer.lr",)
        )
    if len(loss) < 3:
        return None
    diverging = loss[-1] > loss[0] * (1 + DIVERGE_RISE)
    worse = sum(b > a for a, b in pairwise(loss)) / (len(loss) - 1)
    if not diverging and worse < OSCILLATION_SHARE:
        return None
    shape = "diverges" if diverging else f"gets worse in {worse:.0%} of epochs"
    return Finding(
        "learning rate too high",
        f"the training loss {shape}: lower the learning rate or add a schedule",
        ("optimizer.lr", "optimizer.schedule.name"),
    )


def _imbalance(e: Evidence) -> Finding | None:
    counts = np.asarray(e.train_counts, dtype=float)
    recall = np.asarray(e.test_recall, dtype=float)
    if counts.min() <= 0 or counts.max() / counts.min() < IMBALANCE_RATIO:
        return None
    smallest = int(np.argmin(counts))
    if recall[smallest] >= MINORITY_RECALL * recall.mean():
        return None
    binary = len(counts) == 2
    advice = "resample the classes" if e.class_weights else "weight the loss"
    keys: tuple[str, ...] = ("data.negative_ratio",) if binary else ("data.max_per_class",)
    if not e.class_weights:
        keys = ("trainer.class_weights", *keys)
    return Finding(
        "class imbalance",
        f"classes differ {counts.max() / counts.min():.1f}x in size and the smallest, "
        f"{e.class_names[smallest]}, has recall {recall[smallest]:.2f}: {advice}"
        + (", or choose the threshold for recall (trainer.threshold.metric)" if binary else ""),
        keys,
    )


def _one_sided_errors(e: Evidence) -> Finding | None:
    """Binary: most mistakes are missed positives, or most are false alarms."""
    if len(e.class_names) != 2:
        return None
    missed, false_alarms = int(e.confusion[1, 0]), int(e.confusion[0, 1])
    errors = missed + false_alarms
    if errors < ONE_SIDED_MIN_ERRORS or max(missed, false_alarms) < ONE_SIDED_ERRORS * errors:
        return None
    positive, negative = e.class_names[1], e.class_names[0]
    if missed > false_alarms:
        seen = f"{missed} of {errors} errors are missed {positive} (called {negative})"
        advice = "ask the threshold for recall (trainer.threshold.metric=recall with a target)"
    else:
        seen = f"{false_alarms} of {errors} errors are false alarms ({negative} called {positive})"
        advice = "ask the threshold for precision (trainer.threshold.metric=precision)"
    return Finding(
        "errors on one side",
        f"{seen} at 0.5: {advice}, or weight the loss if the classes are unequal",
        ("trainer.threshold.metric", "trainer.threshold.target", "trainer.class_weights"),
    )


def _concentrated_errors(e: Evidence) -> Finding | None:
    errors = e.confusion.copy()
    np.fill_diagonal(errors, 0)
    total = errors.sum()
    if total == 0 or len(e.class_names) < 3:
        return None
    flat = np.sort(errors, axis=None)[::-1]
    share = flat[:3].sum() / total
    confidence = float(np.mean(e.error_confidences)) if len(e.error_confidences) else 0.0
    if share < CONCENTRATED_ERRORS or confidence < CONFIDENT_ERRORS:
        return None
    i, j = (int(index) for index in np.unravel_index(np.argmax(errors), errors.shape))
    pair = f"{e.class_names[i]}/{e.class_names[j]}"
    return Finding(
        "confident confusions",
        f"{share:.0%} of errors fall on three class pairs (worst: {pair}) at mean confidence "
        f"{confidence:.2f}: look at those pairs in misclassified.png, or train on them alone",
        (f"data.classes=[{e.class_names[i]},{e.class_names[j]}]",),
    )


def _validation_at_chance(e: Evidence) -> Finding | None:
    """Training learns while validation does not: train and eval modes differ."""
    train, val = e.history.get("accuracy", []), e.history.get("val_accuracy", [])
    chance = 1.0 / max(2, len(e.class_names))
    if len(train) < 2 or not val or train[-1] < TRAIN_ABOVE_CHANCE * chance:
        return None
    if max(val) >= CHANCE_MULTIPLE * chance:
        return None
    return Finding(
        "validation at chance",
        f"train accuracy rose to {train[-1]:.2f} while validation stayed at chance "
        f"({max(val):.2f}, chance {chance:.2f}): the network evaluated is not the one that "
        "trained; lower model.bn_momentum (0.9 settles in a few hundred steps), check the "
        "learning rate, or take more steps (trainer.epochs; trainer.min_steps_per_epoch "
        "repeats a small set within an epoch)",
        ("model.bn_momentum", "optimizer.lr", "trainer.epochs", "trainer.min_steps_per_epoch"),
    )


def _weak_model(e: Evidence) -> Finding | None:
    """Barely better than colour statistics (or chance) is a model that learnt little."""
    chance = 1.0 / max(2, len(e.class_names))
    floor = e.floor_f1_macro
    if floor is not None and e.test_f1_macro < floor + FLOOR_MARGIN:
        what = f"the no-learning floor's {floor:.2f} (colour statistics alone)"
    elif e.test_f1_macro < CHANCE_MULTIPLE * chance:
        what = f"chance ({chance:.2f})"
    else:
        return None
    return Finding(
        "weak model",
        f"test macro F1 {e.test_f1_macro:.2f} is barely above {what}: train longer, "
        "use a stronger model family or a larger image size",
        ("trainer.epochs", "model", "data.image_size", "optimizer.lr"),
    )


RULES = (
    _validation_at_chance,
    _weak_model,
    _overfitting,
    _underfitting,
    _learning_rate_too_high,
    _imbalance,
    _one_sided_errors,
    _concentrated_errors,
)


def diagnose(evidence: Evidence) -> list[Finding]:
    """Every rule's finding on one run's evidence: curves, per-class recall, confusions."""
    return [finding for rule in RULES if (finding := rule(evidence)) is not None]


def as_markdown(findings: list[Finding]) -> str:
    """The findings as the Markdown the MLflow UI shows."""
    lines = ["# What to try next", ""]
    lines += [f.markdown() for f in findings] or ["- No problem found by the rules."]
    return "\n".join(lines) + "\n"


def one_line(findings: list[Finding]) -> str:
    """The findings in one line, for tags and the terminal."""
    if not findings:
        return "diagnosis: no problem found"
    return "diagnosis: " + "; ".join(f"{f.rule} (try {f.config_keys[0]})" for f in findings)
