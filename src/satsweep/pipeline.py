"""``tf.data`` input pipelines over the cached ``uint8`` arrays.

Per-image augmentation (flips and 90-degree turns: aerial scenes have no "up";
reflect-padded shifts; brightness and contrast) uses stateless random ops fed by
a seeded random stream, so it is reproducible with the run's seed and still
differs from epoch to epoch. MixUp and CutMix mix whole batches with Keras' own
layers, seeded by the run. Evaluation batches are never augmented.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from satsweep.data import Split
from satsweep.schema import AugmentConfig

SEEDS_PER_IMAGE = 12  # pairs of stateless seeds: flip, flip, rot90, crop, brightness, contrast


def _translate(images: tf.Tensor, fraction: float, seed: tf.Tensor) -> tf.Tensor:
    """Reflect-pad by ``fraction`` of the size, then crop back at a random offset."""
    height, width = images.shape[0], images.shape[1]
    pad = max(1, round(fraction * max(height, width)))
    padded = tf.pad(images, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, tf.shape(images), seed)


def _jitter(images: tf.Tensor, cfg: AugmentConfig, seeds: tf.Tensor) -> tf.Tensor:
    pixels = tf.cast(images, tf.float32)
    if cfg.brightness > 0:
        pixels = tf.image.stateless_random_brightness(pixels, cfg.brightness * 255.0, seeds[8:10])
    if cfg.contrast > 0:
        pixels = tf.image.stateless_random_contrast(
            pixels, 1.0 - cfg.contrast, 1.0 + cfg.contrast, seeds[10:12]
        )
    return tf.saturate_cast(tf.round(pixels), tf.uint8)


def _augment(
    images: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor, cfg: AugmentConfig
) -> tuple[tf.Tensor, tf.Tensor]:
    if cfg.flip:
        images = tf.image.stateless_random_flip_left_right(images, seeds[:2])
        images = tf.image.stateless_random_flip_up_down(images, seeds[2:4])
    if cfg.rot90:
        k = tf.random.stateless_uniform([], seeds[4:6], minval=0, maxval=4, dtype=tf.int32)
        images = tf.image.rot90(images, k)
    if cfg.translate > 0:
        images = _translate(images, cfg.translate, seeds[6:8])
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
    the learning rate and batch-norm's statistics.
    """
    return max(1, math.ceil(min_steps * batch_size / max(examples, 1)))


def steps_per_epoch(examples: int, batch_size: int, passes: int) -> int:
    """Optimizer steps in one epoch of ``passes`` over ``examples``."""
    return max(1, math.ceil(examples * passes / batch_size))


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
    if augment.per_image:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
            SEEDS_PER_IMAGE
        )
        data = tf.data.Dataset.zip(data, seeds).map(
            lambda example, seeds: _augment(example[0], example[1], seeds, augment),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    data = data.batch(batch_size)
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
