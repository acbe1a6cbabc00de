"""The no-learning floor: what colour statistics alone say about the classes.

A logistic regression (scikit-learn) on per-channel means, standard deviations
and colour histograms of each image, fitted on the same train split the networks
train on. It takes about a second. A network that scores near it has learnt
little from the pixels' arrangement; one at chance has learnt nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from satsweep.data import Dataset
from satsweep.metrics import evaluate_predictions, prefixed

HISTOGRAM_BINS = 8  # per channel
FLOOR_PREFIX = "floor_"
FLOOR_METHOD = "logistic regression on colour statistics"


@dataclass(frozen=True)
class Floor:
    """The floor's val and test metrics (``val_f1_macro``, ``test_accuracy``, ...)."""

    metrics: dict[str, float]
    method: str = FLOOR_METHOD

    @property
    def logged(self) -> dict[str, float]:
        """The metrics as logged next to a model's: ``floor_test_f1_macro``, ..."""
        return {f"{FLOOR_PREFIX}{name}": value for name, value in self.metrics.items()}


def colour_features(images: np.ndarray) -> np.ndarray:
    """Per image: channel means and standard deviations, and a histogram per channel."""
    pixels = images.reshape(len(images), -1, images.shape[-1]).astype(np.float32) / 255.0
    means, stds = pixels.mean(axis=1), pixels.std(axis=1)
    bins = np.minimum((pixels * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    edges = np.arange(HISTOGRAM_BINS)
    histograms = [
        (bins[..., c, None] == edges).mean(axis=1, dtype=np.float32)
        for c in range(images.shape[-1])
    ]
    return np.concatenate([means, stds, *histograms], axis=1)


def no_learning_floor(dataset: Dataset, seed: int = 0) -> Floor:
    """Fit on ``dataset.train``, score val and test like any model."""
    classifier = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)
    )
    classifier.fit(colour_features(dataset.train.images), dataset.train.labels)
    metrics: dict[str, float] = {}
    for name, split in (("val", dataset.val), ("test", dataset.test)):
        scores = classifier.predict_proba(colour_features(split.images))
        probabilities = np.zeros((len(split), dataset.num_classes))
        probabilities[:, classifier.classes_] = scores  # a class absent from train scores 0
        evaluation = evaluate_predictions(split.labels, probabilities, dataset.class_names)
        metrics.update(prefixed(evaluation.metrics, name))
    return Floor(metrics)
