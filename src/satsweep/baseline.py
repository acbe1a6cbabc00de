"""The no-learning floor: what colour statistics alone say about the classes.

A logistic regression (scikit-learn) on per-channel means, standard deviations
and colour histograms of each image, fitted on the same train split the networks
train on. A network that scores near it has learnt little from the pixels'
arrangement; one at chance has learnt nothing at all. Fitting it takes 1-2 s on
2 cores, before every sweep's first trial and in every ``satsweep train``, so
each split's floor is kept in the data cache and fitted once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from satsweep.data import Dataset
from satsweep.files import atomic_file
from satsweep.metrics import evaluate_predictions, prefixed

HISTOGRAM_BINS = 8  # per channel
FLOOR_PREFIX = "floor_"
FLOOR_METHOD = "logistic regression on colour statistics"
FLOOR_VERSION = 1  # bump when the features or the classifier change: old entries go unread


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
    """Per image: channel means and standard deviations, and a histogram per channel.

    The histograms come from one ``np.bincount`` over (image, channel, bin) slots:
    comparing every pixel with every bin edge took seconds on a few thousand chips,
    on the path before a sweep's first trial.
    """
    channels = images.shape[-1]
    # (image, channel, pixel): every reduction runs along contiguous memory
    pixels = np.ascontiguousarray(images.reshape(len(images), -1, channels).transpose(0, 2, 1))
    scaled = pixels.astype(np.float32) / 255.0
    means, stds = scaled.mean(axis=2), scaled.std(axis=2)
    count, size = len(images), pixels.shape[2]
    bins = np.minimum((scaled * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    slots = np.arange(count * channels).reshape(count, channels, 1) * HISTOGRAM_BINS
    counts = np.bincount((slots + bins).ravel(), minlength=count * channels * HISTOGRAM_BINS)
    histograms = counts.reshape(count, channels * HISTOGRAM_BINS).astype(np.float32) / size
    return np.concatenate([means, stds, histograms], axis=1)


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


def cached_floor(dataset: Dataset, seed: int, cache_dir: Path) -> Floor:
    """The floor of this exact split and seed: read from ``cache_dir``, else fitted and kept.

    The entry's name is a digest of the split's arrays, class names and seed, so
    another split, image size or seed never reads it. An unreadable entry (a
    full disk, say) is fitted again rather than failing the run.
    """
    path = cache_dir / f"floor-v{FLOOR_VERSION}-{_split_digest(dataset, seed)[:24]}.json"
    if (stored := _read_metrics(path)) is not None:
        return Floor(stored)
    floor = no_learning_floor(dataset, seed)
    # A read-only cache still gives the floor; parallel workers may fill one entry.
    with contextlib.suppress(OSError), atomic_file(path) as stream:
        stream.write(json.dumps(floor.metrics).encode())
    return floor


def _read_metrics(path: Path) -> dict[str, float] | None:
    """The metrics an entry holds, or None when it is missing, damaged or not metrics."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or "test_f1_macro" not in stored:
        return None
    return stored if all(isinstance(value, float) for value in stored.values()) else None


def _split_digest(dataset: Dataset, seed: int) -> str:
    digest = hashlib.sha256(json.dumps([dataset.class_names, seed]).encode())
    for split in (dataset.train, dataset.val, dataset.test):
        digest.update(np.ascontiguousarray(split.images).data)
        digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).data)
    return digest.hexdigest()
