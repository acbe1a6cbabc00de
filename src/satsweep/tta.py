"""Test-time augmentation: average the predictions of transformed copies of each image.

Aerial scenes have no "up", so flips and quarter turns are label-preserving; the
average of their predictions is a cheap, reliable gain at evaluation time. The
per-epoch validation curves Keras reports are not averaged (they stay cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import keras
import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _hflip(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1]


def _vflip(x: np.ndarray) -> np.ndarray:
    return x[:, ::-1]


def _dihedral() -> list[Transform]:
    """The 8 symmetries of the square: 4 quarter turns, each with and without a flip."""
    turns: list[Transform] = [partial(_turn, k=k) for k in range(4)]
    return [*turns, *(partial(_flipped, turn=turn) for turn in turns)]


def _turn(x: np.ndarray, k: int) -> np.ndarray:
    return np.rot90(x, k, axes=(1, 2))


def _flipped(x: np.ndarray, turn: Transform) -> np.ndarray:
    return turn(_hflip(x))


def transforms(mode: str) -> list[Transform]:
    """The transforms of ``trainer.tta``: ``none``, ``flips`` (3) or ``dihedral`` (8)."""
    if mode == "flips":
        return [_identity, _hflip, _vflip]
    if mode == "dihedral":
        return _dihedral()
    return [_identity]


def predict(model: keras.Model, images: np.ndarray, mode: str, batch_size: int) -> np.ndarray:
    """Class probabilities, averaged over the transforms of ``mode``."""
    predictions = [
        model.predict(np.ascontiguousarray(transform(images)), batch_size=batch_size, verbose=0)
        for transform in transforms(mode)
    ]
    return np.mean(predictions, axis=0)
