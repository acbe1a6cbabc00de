"""Model builders, registered by the ``name`` of their config.

Every model takes ``uint8`` images and rescales them itself, so the input pipeline
moves compact bytes and a saved model can be fed raw chips directly. Every
batch-norm layer takes its momentum from the config: Keras' default (0.99) needs
about 500 steps to forget its initial statistics, more than a short run has, and
then evaluation sees a different network from the one that trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from satsweep.errors import UserError
from satsweep.schema import (
    BackboneConfig,
    CNNConfig,
    MLPConfig,
    ModelConfig,
    ResNetConfig,
    SeparableConfig,
)

Builder = Callable[[ModelConfig, keras.KerasTensor], keras.KerasTensor]
BACKBONE_LAYER = "backbone"  # the name of the keras.applications sub-model
# Per model type, the keys that give it more capacity, for "what to try next".
CAPACITY_KNOBS = {
    "cnn": ("model.blocks", "model.filters"),
    "mlp": ("model.hidden_units",),
    "resnet": ("model.stages", "model.width"),
    "separable": ("model.stages", "model.width"),
    "backbone": ("model.architecture", "model.input_size"),
}


def _bn_relu(x: keras.KerasTensor, momentum: float) -> keras.KerasTensor:
    x = layers.BatchNormalization(momentum=momentum)(x)
    return layers.Activation("relu")(x)


def _rescaled(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.Rescaling(1.0 / 255.0)(x)


def _cnn_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, CNNConfig)
    x = _rescaled(x)
    filters = float(cfg.filters)
    for _ in range(cfg.blocks):
        for _ in range(cfg.convs_per_block):
            x = layers.Conv2D(
                round(filters), cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm
            )(x)
            if cfg.batch_norm:
                x = layers.BatchNormalization(momentum=cfg.bn_momentum)(x)
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
    x = layers.Flatten()(_rescaled(x))
    for units in cfg.hidden_units:
        x = layers.Dense(units, use_bias=not cfg.batch_norm)(x)
        if cfg.batch_norm:
            x = layers.BatchNormalization(momentum=cfg.bn_momentum)(x)
        x = layers.Activation("relu")(x)
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout)(x)
    return x


def _stem(x: keras.KerasTensor, filters: int, stride: int) -> keras.KerasTensor:
    """A strided stem: the kernel covers the stride, so no pixel is skipped."""
    kernel = max(3, stride)
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)


def _stage_widths(width: int, growth: float, stages: int) -> list[int]:
    return [max(1, round(width * growth**stage)) for stage in range(stages)]


def _preact_block(
    x: keras.KerasTensor, filters: int, stride: int, momentum: float
) -> keras.KerasTensor:
    """BN-ReLU-conv twice; the shortcut is projected when the shape changes."""
    activated = _bn_relu(x, momentum)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(activated)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(activated)
    y = _bn_relu(y, momentum)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    return layers.Add()([shortcut, y])


def _resnet_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, ResNetConfig)
    widths = _stage_widths(cfg.width, cfg.width_growth, cfg.stages)
    x = _stem(_rescaled(x), widths[0], cfg.stem_stride)
    for stage, filters in enumerate(widths):
        for block in range(cfg.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _preact_block(x, filters, stride, cfg.bn_momentum)
    x = _bn_relu(x, cfg.bn_momentum)  # pre-activation nets end with the last BN-ReLU
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(cfg.dropout)(x) if cfg.dropout > 0 else x


def _inverted_residual(
    x: keras.KerasTensor, filters: int, stride: int, expansion: int, momentum: float
) -> keras.KerasTensor:
    inputs = x
    y = layers.Conv2D(x.shape[-1] * expansion, 1, use_bias=False)(x)
    y = _bn_relu(y, momentum)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)
    y = _bn_relu(y, momentum)
    y = layers.Conv2D(filters, 1, use_bias=False)(y)
    y = layers.BatchNormalization(momentum=momentum)(y)  # linear bottleneck: no ReLU
    if stride == 1 and inputs.shape[-1] == filters:
        y = layers.Add()([inputs, y])
    return y


def _separable_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, SeparableConfig)
    widths = _stage_widths(cfg.width, cfg.width_growth, cfg.stages)
    x = _bn_relu(_stem(_rescaled(x), widths[0], cfg.stem_stride), cfg.bn_momentum)
    for stage, filters in enumerate(widths):
        for block in range(cfg.blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _inverted_residual(x, filters, stride, cfg.expansion, cfg.bn_momentum)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(cfg.dropout)(x) if cfg.dropout > 0 else x


@dataclass(frozen=True)
class Architecture:
    """A ``keras.applications`` constructor and the pixel scale it expects."""

    constructor: Callable[..., keras.Model]
    scale: float  # applied to 0..255 pixels before the network
    offset: float
    options: tuple[tuple[str, object], ...] = ()


ARCHITECTURES: dict[str, Architecture] = {
    # EfficientNetV2 and MobileNetV3 rescale 0..255 inputs themselves.
    "EfficientNetV2B0": Architecture(
        keras.applications.EfficientNetV2B0, 1.0, 0.0, (("include_preprocessing", True),)
    ),
    "MobileNetV3Small": Architecture(
        keras.applications.MobileNetV3Small, 1.0, 0.0, (("include_preprocessing", True),)
    ),
    "ResNet50V2": Architecture(keras.applications.ResNet50V2, 1.0 / 127.5, -1.0),
}


def build_backbone(cfg: BackboneConfig, channels: int) -> keras.Model:
    """The headless network, its weights loaded as configured, named ``backbone``."""
    arch = ARCHITECTURES[cfg.architecture]
    try:
        network = arch.constructor(
            include_top=False,
            weights=cfg.weights,
            input_shape=(cfg.input_size, cfg.input_size, channels),
            pooling="avg",
            **dict(arch.options),
        )
    except ValueError as error:  # a file of another architecture, or a bad path
        raise UserError(
            f"cannot load model.weights={cfg.weights!r} into {cfg.architecture}: "
            f"{' '.join(str(error).split())[:200]}"
        ) from error
    except Exception as error:  # Keras' download of imagenet weights failed
        if cfg.weights != "imagenet":
            raise
        raise UserError(
            f"model.weights=imagenet could not be downloaded for {cfg.architecture} "
            f"({type(error).__name__}): with no internet, save the weights elsewhere and "
            "pass model.weights=/path/to/file.weights.h5"
        ) from error
    for layer in network.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
    network.name = BACKBONE_LAYER
    return network


def _backbone_features(cfg: ModelConfig, x: keras.KerasTensor) -> keras.KerasTensor:
    assert isinstance(cfg, BackboneConfig)
    if cfg.weights not in (None, "imagenet") and not _is_file(cfg.weights):
        raise UserError(
            f"model.weights={cfg.weights!r} is not a file: pass null, imagenet or the path "
            "of a weights file (.weights.h5) saved from the same architecture"
        )
    arch = ARCHITECTURES[cfg.architecture]
    x = layers.Resizing(cfg.input_size, cfg.input_size)(x)  # upsizes (or downsizes) to fit
    x = layers.Rescaling(arch.scale, offset=arch.offset)(x)
    x = build_backbone(cfg, int(x.shape[-1]))(x)
    return layers.Dropout(cfg.dropout)(x) if cfg.dropout > 0 else x


def _is_file(path: str | None) -> bool:
    return path is not None and Path(path).is_file()


BUILDERS: dict[str, Builder] = {
    "cnn": _cnn_features,
    "mlp": _mlp_features,
    "resnet": _resnet_features,
    "separable": _separable_features,
    "backbone": _backbone_features,
}


def build_model(
    cfg: ModelConfig, image_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """A softmax classifier over ``num_classes`` (binary tasks use two classes)."""
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    features = BUILDERS[cfg.name](cfg, inputs)
    # float32 probabilities under mixed precision: a 16-bit softmax loses small ones
    outputs = layers.Dense(
        num_classes, activation="softmax", name="probabilities", dtype="float32"
    )(features)
    return keras.Model(inputs, outputs, name=cfg.name)


def set_backbone_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freeze or unfreeze the ``backbone`` sub-model; False when the model has none."""
    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError:
        return False
    backbone.trainable = trainable
    return True
