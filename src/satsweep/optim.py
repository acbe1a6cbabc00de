"""Optimizers and learning-rate schedules, built from their typed configs.

Schedules that depend on the step count (cosine, step) become Keras schedule
objects; the plateau schedule reacts to validation loss, so it is a callback.
"""

from __future__ import annotations

import keras

from satsweep.schema import (
    AdamConfig,
    AdamWConfig,
    OptimizerConfig,
    RMSpropConfig,
    ScheduleConfig,
    SGDConfig,
)

LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


def learning_rate(
    lr: float, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> LearningRate:
    if cfg.name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=max(1, steps_per_epoch * epochs), alpha=cfg.min_lr_ratio
        )
    if cfg.name == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            lr,
            decay_steps=steps_per_epoch * cfg.step_epochs,
            decay_rate=cfg.gamma,
            staircase=True,
        )
    return lr


def build_optimizer(
    cfg: OptimizerConfig, steps_per_epoch: int, epochs: int
) -> keras.optimizers.Optimizer:
    lr = learning_rate(cfg.lr, cfg.schedule, steps_per_epoch, epochs)
    if isinstance(cfg, AdamConfig):
        return keras.optimizers.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    if isinstance(cfg, AdamWConfig):
        return keras.optimizers.AdamW(
            lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, weight_decay=cfg.weight_decay
        )
    if isinstance(cfg, SGDConfig):
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if isinstance(cfg, RMSpropConfig):
        return keras.optimizers.RMSprop(lr, rho=cfg.rho, momentum=cfg.momentum)
    raise TypeError(f"no optimizer builder for {type(cfg).__name__}")


def schedule_callbacks(cfg: OptimizerConfig) -> list[keras.callbacks.Callback]:
    if cfg.schedule.name != "plateau":
        return []
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=cfg.schedule.gamma,
            patience=cfg.schedule.patience,
            min_lr=cfg.lr * cfg.schedule.min_lr_ratio,
        )
    ]
