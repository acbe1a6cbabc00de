"""Model builders, registered by the ``name`` of their config.

Every model takes ``uint8`` images and rescales them itself, so the input pipeline
moves compact bytes and a saved model can be fed raw chips directly.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from satsweep.schema import CNNConfig, MLPConfig, ModelConfig

Builder = Callable[[ModelConfig, keras.KerasTensor], keras.KerasTensor]


def _cnn_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, CNNConfig)
    filters = float(cfg.filters)
    for _ in range(cfg.blocks):
        for _ in range(cfg.convs_per_block):
            x = layers.Conv2D(
                round(filters), cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm
            )(x)
            if cfg.batch_norm:
                x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
        filters *= cfg.filters_growth
    pooling = {
        "avg": layers.GlobalAveragePooling2D,
        "max": layers.GlobalMaxPooling2D,
        "flatten": layers.Flatten,
    }[cfg.pooling]
    x = pooling()(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout)(x)
    if cfg.dense_units > 0:
        x = layers.Dense(cfg.dense_units, activation="relu")(x)
    return x


def _mlp_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, MLPConfig)
    x = layers.Flatten()(x)
    for units in cfg.hidden_units:
        x = layers.Dense(units, use_bias=not cfg.batch_norm)(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout)(x)
    return x


BUILDERS: dict[str, Builder] = {"cnn": _cnn_features, "mlp": _mlp_features}


def build_model(
    cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """A softmax classifier over ``num_classes`` (binary tasks use two classes)."""
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    features = BUILDERS[cfg.name](cfg, x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(features)
    return keras.Model(inputs, outputs, name=cfg.name)
