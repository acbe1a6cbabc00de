"""Test-time augmentation: average the predictions of transformed copies of each image.

Aerial scenes have no "up", so flips and quarter turns are label-preserving; the
average of their predictions is a cheap, reliable gain at evaluation time. The
per-epoch validation curves Keras reports are not averaged (they stay cheap).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import keras
import numpy as np
import tensorflow as tf

Transform = Callable[[tf.Tensor], tf.Tensor]  # on a batch of NHWC images


def _identity(x: tf.Tensor) -> tf.Tensor:
    return x


def _hflip(x: tf.Tensor) -> tf.Tensor:
    return tf.reverse(x, [2])


def _vflip(x: tf.Tensor) -> tf.Tensor:
    return tf.reverse(x, [1])


def _dihedral() -> list[Transform]:
    """The 8 symmetries of the square: 4 quarter turns, each with and without a flip."""
    turns: list[Transform] = [partial(_turn, k=k) for k in range(4)]
    return [*turns, *(partial(_flipped, turn=turn) for turn in turns)]


def _turn(x: tf.Tensor, k: int) -> tf.Tensor:
    return tf.image.rot90(x, k)


def _flipped(x: tf.Tensor, turn: Transform) -> tf.Tensor:
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
    return predict_splits(model, [images], mode, batch_size)[0]


def predict_splits(
    model: keras.Model, splits: Sequence[np.ndarray], mode: str, batch_size: int
) -> list[np.ndarray]:
    """Each split's class probabilities, averaged over the transforms of ``mode``.

    One ``model.predict`` call streams every transform of every split: each call
    sets up its own data adapter and iterator, which on a few hundred images
    costs as much as the predictions, and streaming keeps one batch in memory.
    Blank images fill the last batch, so that every batch has one shape and the
    prediction step is traced once, not once per split's last batch (0.1-0.2 s a
    run, and TensorFlow's retracing warning in a sweep worker's log).
    """
    ops = transforms(mode)
    parts = [
        tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(op)
        for images in splits
        for op in ops
    ]
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.concatenate(part)
    count = sum(len(images) for images in splits) * len(ops)
    blanks = -count % batch_size
    blank = tf.zeros(splits[0].shape[1:], splits[0].dtype)
    stream = (
        stream.unbatch()
        .concatenate(tf.data.Dataset.from_tensors(blank).repeat(blanks))
        .batch(batch_size, drop_remainder=True)
        .apply(tf.data.experimental.assert_cardinality((count + blanks) // batch_size))
    )
    probabilities = model.predict(stream.prefetch(tf.data.AUTOTUNE), verbose=0)[:count]
    ends = np.cumsum([len(images) * len(ops) for images in splits])[:-1]
    return [
        chunk.reshape(len(ops), -1, chunk.shape[-1]).mean(axis=0)
        for chunk in np.split(probabilities, ends)
    ]
