"""``tf.data`` input pipelines over the cached ``uint8`` arrays.

Per-image augmentation (flips and 90-degree turns: aerial scenes have no "up";
reflect-padded shifts; brightness and contrast) runs on whole batches, each image
with its own draws: mapping a function over single small images costs tf.data
more than the ops themselves, and on a CPU that time is taken from training.
Keras has no layer for quarter turns, hence these few ops. They are stateless
random ops fed by a seeded random stream, so a run is reproducible with its seed
and still sees new draws every epoch. MixUp and CutMix mix whole batches with
Keras' own layers, seeded by the run. Evaluation batches are never augmented.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from satsweep.data import Split
from satsweep.schema import AugmentConfig

SEEDS_PER_BATCH = 12  # pairs of stateless seeds: flip, flip, rot90, crop, brightness, contrast


def _per_image(
    images: tf.Tensor, seed: tf.Tensor, low: float = 0.0, high: float = 1.0
) -> tf.Tensor:
    """One uniform draw per image of the batch, from a stateless seed pair."""
    return tf.random.stateless_uniform([tf.shape(images)[0]], seed, low, high)


def _coin(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One fair coin per image, shaped to broadcast over its rows and columns."""
    return (_per_image(images, seed) < 0.5)[:, None, None]


def _geometry(images: tf.Tensor, cfg: AugmentConfig, seeds: tf.Tensor) -> tf.Tensor:
    """Flips, quarter turns and reflect-padded shifts as one gather of source pixels.

    Each image gets its own element of the square's symmetry group (a transpose,
    then a left-right and an up-down flip) and its own crop offset. Reflect
    padding commutes with those symmetries, so transforming the padded image and
    cropping it equals shifting the transformed one. One gather takes 40% of the
    time of chaining the ops on the batch, or of mapping them over single images.
    """
    count, size, channels = tf.shape(images)[0], images.shape[1], images.shape[3]
    pad = max(1, round(cfg.translate * size)) if cfg.translate > 0 else 0
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    span = size + 2 * pad
    no = tf.zeros([count, 1, 1], tf.bool)
    left_right = _coin(images, seeds[:2]) if cfg.flip else no
    up_down = _coin(images, seeds[2:4]) if cfg.flip else no
    transpose = no
    if cfg.rot90:
        # turning by k: transpose if k is odd, left-right if k >= 2, up-down if k is 1 or 2
        turns = tf.cast(tf.floor(_per_image(images, seeds[4:6], 0.0, 4.0)), tf.int32)
        turns = turns[:, None, None]
        transpose = turns % 2 == 1
        left_right = tf.math.logical_xor(left_right, turns >= 2)
        up_down = tf.math.logical_xor(up_down, (turns == 1) | (turns == 2))
    offsets = tf.random.stateless_uniform([count, 2], seeds[6:8], 0, 2 * pad + 1, tf.int32)
    rows = offsets[:, :1, None] + tf.range(size)[None, :, None]  # (count, size, 1)
    columns = offsets[:, 1:, None] + tf.range(size)[None, None, :]  # (count, 1, size)
    rows = tf.where(up_down, span - 1 - rows, rows)
    columns = tf.where(left_right, span - 1 - columns, columns)
    rows, columns = tf.where(transpose, columns, rows), tf.where(transpose, rows, columns)
    pixel = (tf.range(count)[:, None, None] * span + rows) * span + columns
    return tf.gather(tf.reshape(padded, [-1, channels]), pixel)


def _jitter(images: tf.Tensor, cfg: AugmentConfig, seeds: tf.Tensor) -> tf.Tensor:
    """Per-image brightness shift and contrast factor, as ``tf.image``'s adjust functions."""
    pixels = tf.cast(images, tf.float32)
    if cfg.brightness > 0:
        shift = cfg.brightness * 255.0
        pixels += _per_image(pixels, seeds[8:10], -shift, shift)[:, None, None, None]
    if cfg.contrast > 0:
        factor = _per_image(pixels, seeds[10:12], 1.0 - cfg.contrast, 1.0 + cfg.contrast)
        mean = tf.reduce_mean(pixels, axis=(1, 2), keepdims=True)
        pixels = (pixels - mean) * factor[:, None, None, None] + mean
    return tf.saturate_cast(tf.round(pixels), tf.uint8)


def _augment(
    images: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor, cfg: AugmentConfig
) -> tuple[tf.Tensor, tf.Tensor]:
    """One batch, each image with its own draws."""
    if cfg.flip or cfg.rot90 or cfg.translate > 0:
        images = _geometry(images, cfg, seeds)
    if cfg.brightness > 0 or cfg.contrast > 0:
        images = _jitter(images, cfg, seeds)
    return images, labels


def _batch_mixers(cfg: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    """Keras' MixUp and CutMix layers, as configured (none, one or both)."""
    mixers = []
    if cfg.mixup > 0:
        mixers.append(keras.layers.MixUp(alpha=cfg.mixup, seed=seed))
    if cfg.cutmix > 0:
        mixers.append(keras.layers.CutMix(factor=cfg.cutmix, seed=seed + 1))
    return mixers


def _mixed(data: tf.data.Dataset, mixers: list[keras.layers.Layer], seed: int) -> tf.data.Dataset:
    """Each batch goes through one mixer; with two, a seeded coin picks which (as in timm)."""

    def through(mixer: keras.layers.Layer, images: tf.Tensor, labels: tf.Tensor) -> tuple:
        out = mixer({"images": tf.cast(images, tf.float32), "labels": labels}, training=True)
        return tf.saturate_cast(tf.round(out["images"]), tf.uint8), out["labels"]

    def mix(batch: tuple[tf.Tensor, tf.Tensor], coin: tf.Tensor) -> tuple:
        if len(mixers) == 1:
            return through(mixers[0], *batch)
        heads = tf.random.stateless_uniform([], tf.stack([coin, coin + 1])) < 0.5
        return tf.cond(
            heads, lambda: through(mixers[0], *batch), lambda: through(mixers[1], *batch)
        )

    coins = tf.data.Dataset.random(seed=seed + 2, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(data, coins).map(mix)  # sequential: mixer seeds advance in order


def passes_per_epoch(examples: int, batch_size: int, min_steps: int) -> int:
    """How many times an epoch passes over ``examples`` to take at least ``min_steps`` steps.

    A few hundred images at batch 64 give three steps an epoch: a ten-epoch run
    then ends before the network has learned anything (its warm-up alone is an
    epoch). Repeating the set keeps the batch size, and with it the meaning of
    the learning rate and batch-norm's statistics. A batch larger than the set
    holds the set once: counting the batch as configured would repeat a few
    images thousands of times within each step.
    """
    batch = min(batch_size, max(examples, 1))
    return max(1, math.ceil(min_steps * batch / max(examples, 1)))


def steps_per_epoch(examples: int, batch_size: int, passes: int) -> int:
    """Optimizer steps in one epoch of ``passes`` over ``examples``."""
    return max(1, math.ceil(examples * passes / min(batch_size, max(examples, 1))))


def training_dataset(
    split: Split,
    num_classes: int,
    batch_size: int,
    augment: AugmentConfig,
    seed: int,
    passes: int = 1,
) -> tf.data.Dataset:
    """Shuffled (anew each pass), optionally augmented batches of ``(uint8 image, one-hot)``.

    ``passes`` (see :func:`passes_per_epoch`) repeats the set within an epoch.
    """
    data = (
        tf.data.Dataset.from_tensor_slices((split.images, tf.one_hot(split.labels, num_classes)))
        .shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        .repeat(passes)
    )
    data = data.batch(min(batch_size, len(split)))  # a larger batch holds the split once
    if augment.per_image:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
            SEEDS_PER_BATCH
        )
        data = tf.data.Dataset.zip(data, seeds).map(
            lambda batch, seeds: _augment(batch[0], batch[1], seeds, augment),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    mixers = _batch_mixers(augment, seed)
    if mixers:
        data = _mixed(data, mixers, seed)
    return data.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(split: Split, num_classes: int, batch_size: int) -> tf.data.Dataset:
    """Batches of one split in order, unaugmented: what evaluation sees."""
    return (
        tf.data.Dataset.from_tensor_slices((split.images, tf.one_hot(split.labels, num_classes)))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def statistics_sample(
    split: Split,
    num_classes: int,
    batch_size: int,
    augment: AugmentConfig,
    seed: int,
    images: int,
) -> np.ndarray:
    """About ``images`` augmented, shuffled training images, for batch-norm statistics.

    A pipeline of its own, seeded apart, so the training batches stay those of a
    run without it.
    """
    batches = training_dataset(split, num_classes, batch_size, augment, seed + 1).take(
        math.ceil(images / batch_size)
    )
    return np.concatenate([np.asarray(batch) for batch, _ in batches])
