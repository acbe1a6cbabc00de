"""``tf.data`` input pipelines over the cached ``uint8`` arrays.

Augmentation (flips and 90-degree turns: aerial scenes have no "up") uses
stateless random ops fed by a seeded random stream, so it is reproducible with
the run's seed and still differs from epoch to epoch.
"""

from __future__ import annotations

import tensorflow as tf

from satsweep.data import Split
from satsweep.schema import AugmentConfig


def _augment(
    images: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor, cfg: AugmentConfig
) -> tuple[tf.Tensor, tf.Tensor]:
    if cfg.flip:
        images = tf.image.stateless_random_flip_left_right(images, seeds[:2])
        images = tf.image.stateless_random_flip_up_down(images, seeds[2:4])
    if cfg.rot90:
        k = tf.random.stateless_uniform([], seeds[4:6], minval=0, maxval=4, dtype=tf.int32)
        images = tf.image.rot90(images, k)
    return images, labels


def training_dataset(
    split: Split, num_classes: int, batch_size: int, augment: AugmentConfig, seed: int
) -> tf.data.Dataset:
    """Shuffled (anew each epoch), optionally augmented batches of ``(uint8 image, one-hot)``."""
    data = tf.data.Dataset.from_tensor_slices(
        (split.images, tf.one_hot(split.labels, num_classes))
    ).shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    if augment.flip or augment.rot90:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(6)
        data = tf.data.Dataset.zip(data, seeds).map(
            lambda example, seeds: _augment(*example, seeds, augment),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(split: Split, num_classes: int, batch_size: int) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices((split.images, tf.one_hot(split.labels, num_classes)))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
