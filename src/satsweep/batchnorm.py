"""Batch-norm statistics recomputed on the current weights for each epoch's validation.

Evaluation uses each batch-norm layer's moving averages, which trail the weights
by about ``1 / (1 - model.bn_momentum)`` steps. In a short run the weights move
faster than that while the learning rate is high, so an early epoch's validation
score measures stale statistics as much as the network, and the pruner decides on
those scores: on AID's quick trial, validation macro F1 read 0.03, 0.20, 0.12 over
the first three epochs with the moving averages and 0.25, 0.32, 0.35 with
statistics recomputed from 128 training images (README, Model quality). This is
"precise batch-norm" (Wu and Johnson, *Rethinking "Batch" in BatchNorm*, 2021).

The statistics come from augmented, shuffled training batches, the distribution
the layers normalised while training. Channel statistics average over every
pixel of every image, so a few batches give precise values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import keras
import numpy as np
import tensorflow as tf


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The model's trainable batch-norm layers, nested ones (a backbone's) included.

    Frozen layers keep their statistics: Keras runs them in inference mode.
    """

    def walk(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
        yield layer
        for inner in getattr(layer, "layers", []):
            yield from walk(inner)

    return [
        layer
        for layer in walk(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recompute_statistics(
    layers: Sequence[keras.layers.BatchNormalization],
    forward: Callable[[np.ndarray], object],
    batches: Sequence[np.ndarray],
) -> None:
    """Set each layer's statistics to their mean over ``batches``, run through ``forward``.

    ``forward`` runs the model in training mode with every momentum at 0, so after
    each batch the moving averages hold that batch's statistics; their mean over
    the batches replaces them (the mean of batch variances, as Keras' averages use).
    """
    means = [np.zeros(layer.moving_mean.shape) for layer in layers]
    variances = [np.zeros(layer.moving_variance.shape) for layer in layers]
    for batch in batches:
        forward(batch)
        for index, layer in enumerate(layers):
            means[index] += np.asarray(layer.moving_mean.numpy()) / len(batches)
            variances[index] += np.asarray(layer.moving_variance.numpy()) / len(batches)
    for layer, mean, variance in zip(layers, means, variances, strict=True):
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))


@contextmanager
def zero_momentum(layers: Sequence[keras.layers.BatchNormalization]) -> Iterator[None]:
    """Momentum 0 inside (a traced forward pass keeps it), the layers' own outside."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def snapshot(model: keras.Model) -> Callable[[], None]:
    """The model's batch-norm statistics as they are now; calling the result puts them back."""
    layers = batchnorm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]

    def restore() -> None:
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)

    return restore


class Recomputer:
    """Recomputes a model's statistics from fixed whole batches, with a forward pass traced once.

    The trace is redone only when the set of trainable layers changes (a backbone
    unfrozen for fine-tuning), so it costs a few inference steps per call.
    """

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        whole = max(1, len(images) // batch_size) * batch_size
        self.batches = [images[i : i + batch_size] for i in range(0, whole, batch_size)]
        self._forward: Callable[[np.ndarray], object] | None = None
        self._traced_for: tuple[int, ...] = ()

    def __call__(self, model: keras.Model) -> None:
        """Set ``model``'s trainable batch-norm statistics to those of the current weights."""
        layers = batchnorm_layers(model)
        if not layers:
            return
        if self._forward is None or self._traced_for != tuple(map(id, layers)):
            self._forward = tf.function(lambda images: model(images, training=True))
            self._traced_for = tuple(map(id, layers))
        with zero_momentum(layers):
            recompute_statistics(layers, self._forward, self.batches)


class PreciseBatchNorm(keras.callbacks.Callback):
    """Each epoch's validation pass sees statistics recomputed on the current weights.

    Keras calls ``on_test_begin`` before the validation of every epoch and
    ``on_test_end`` after it, which puts the moving averages back. By the last
    epoch the learning rate has decayed and the averages span more images than the
    recomputed sample, so the final scores keep them; what changes is the per-epoch
    curve that the pruner and early stopping read. Training, the final evaluation
    and the saved model are those of a run without this callback, except that
    dropout layers draw extra random numbers in the recomputing pass, and early
    stopping may pick another epoch from the new curve.
    """

    def __init__(self, recompute: Recomputer) -> None:
        super().__init__()
        self.recompute = recompute
        self._restore: Callable[[], None] = lambda: None

    def on_test_begin(self, logs: dict[str, float] | None = None) -> None:
        """Recompute, so validation scores the network rather than its lagging averages."""
        self._restore = snapshot(self.model)
        self.recompute(self.model)

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        """The moving averages again, as training left them."""
        self._restore()
