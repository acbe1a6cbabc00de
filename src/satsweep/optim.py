"""Optimizers and learning-rate schedules, built from their typed configs.

Schedules that depend on the step count (cosine, one-cycle, step) become Keras
schedule objects; the plateau schedule reacts to validation loss, so it is a
callback. Cosine and one-cycle decay to ``min_lr_ratio`` (0 by default) at the
last step, so a run's final weights are its settled ones: a trial's score does
not depend on which epoch it happened to stop on.
"""

from __future__ import annotations

import weakref
from typing import Any, TypeAlias

import keras
import tensorflow as tf

from satsweep.schema import (
    AdamConfig,
    AdamWConfig,
    OptimizerConfig,
    RMSpropConfig,
    ScheduleConfig,
    SGDConfig,
)

LearningRate: TypeAlias = float | keras.optimizers.schedules.LearningRateSchedule
ONECYCLE_START = 0.04  # one-cycle starts at lr / 25, as in Smith's and fastai's


@keras.saving.register_keras_serializable(package="satsweep")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``peak * ONECYCLE_START`` to ``peak``, then linear decay to ``floor``.

    Keras ships cosine decay with warm-up but no one-cycle schedule.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, floor: float) -> None:
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.floor = floor

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        start = self.peak * ONECYCLE_START
        rising = start + (self.peak - start) * step / max(1, self.warmup_steps)
        decay = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        falling = self.peak + (self.floor - self.peak) * keras.ops.clip(decay, 0.0, 1.0)
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict[str, Any]:
        """Keras serialises the schedule with the model through this."""
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "floor": self.floor,
        }


@keras.saving.register_keras_serializable(package="satsweep")
class OncePerStep(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule whose ops a traced training step builds once, not once per variable.

    Keras' TensorFlow optimizer reads its learning rate again for every variable it
    applies decoupled weight decay to, and each read of a schedule builds the
    schedule's ops anew: the ResNet's training step traced the warm-up cosine 26
    times, a second of every trial's first epoch. Within one traced step the rate
    cannot change (the iteration counter moves at the step's end), so the first
    read's tensor serves the others; eager reads (the logged ``lr``) pass through.
    Weak references only: the cache never keeps a graph alive.
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule) -> None:
        self.schedule = schedule
        self._traced: tuple[weakref.ref[Any], weakref.ref[Any], weakref.ref[Any]] | None = None

    def __call__(self, step: Any) -> Any:
        if tf.executing_eagerly():
            return self.schedule(step)
        graph = tf.compat.v1.get_default_graph()
        if self._traced is not None:
            same_graph, same_step, value = (ref() for ref in self._traced)
            if same_graph is graph and same_step is step and value is not None:
                return value
        value = self.schedule(step)
        self._traced = (weakref.ref(graph), weakref.ref(step), weakref.ref(value))
        return value

    def get_config(self) -> dict[str, Any]:
        """Keras serialises the schedule with the model through this."""
        return {"schedule": keras.saving.serialize_keras_object(self.schedule)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OncePerStep:
        """The inverse of :meth:`get_config`, for models loaded back."""
        return cls(keras.saving.deserialize_keras_object(config["schedule"]))


def unwrap_schedule(optimizer: keras.optimizers.Optimizer) -> None:
    """Give a trained optimizer its plain Keras schedule back, before its model is saved.

    A saved model carries its optimizer's config: with :class:`OncePerStep` in it,
    loading the model (``mlflow.keras.load_model`` in a user's notebook, ``satsweep
    sync`` of a spooled model) would need satsweep imported first.
    """
    schedule = getattr(optimizer, "_learning_rate", None)  # Keras has no public getter
    if isinstance(schedule, OncePerStep):
        optimizer.learning_rate = schedule.schedule


def learning_rate(
    lr: float, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> LearningRate:
    """The learning rate of one fit of ``epochs`` epochs."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name in ("cosine", "constant"):
        floor = 1.0 if cfg.name == "constant" else cfg.min_lr_ratio  # alpha=1: no decay
        if cfg.name == "constant" and warmup <= 0:
            return lr
        if warmup <= 0:
            return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=floor)
        return keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=total - warmup,
            alpha=floor,
            warmup_target=lr,
            warmup_steps=warmup,
        )
    if cfg.name == "onecycle":
        return OneCycle(lr, max(0, warmup), total, lr * cfg.min_lr_ratio)
    if cfg.name == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            lr,
            decay_steps=steps_per_epoch * cfg.step_epochs,
            decay_rate=cfg.gamma,
            staircase=True,
        )
    return lr  # plateau: the callback changes it


def build_optimizer(
    cfg: OptimizerConfig, steps_per_epoch: int, epochs: int, lr_scale: float = 1.0
) -> keras.optimizers.Optimizer:
    """The configured optimizer; ``lr_scale`` lowers the rate of a fine-tuning phase."""
    lr = learning_rate(cfg.lr * lr_scale, cfg.schedule, steps_per_epoch, epochs)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = OncePerStep(lr)
    common: dict[str, Any] = {
        "weight_decay": cfg.weight_decay,  # Keras applies it decoupled, for any optimizer
        "use_ema": cfg.use_ema,
        "ema_momentum": cfg.ema_momentum,
    }
    if isinstance(cfg, AdamConfig):
        return keras.optimizers.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **common)
    if isinstance(cfg, AdamWConfig):
        return keras.optimizers.AdamW(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, **common)
    if isinstance(cfg, SGDConfig):
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if isinstance(cfg, RMSpropConfig):
        return keras.optimizers.RMSprop(lr, rho=cfg.rho, momentum=cfg.momentum, **common)
    raise TypeError(f"no optimizer builder for {type(cfg).__name__}")


def optimizer_callbacks(cfg: OptimizerConfig) -> list[keras.callbacks.Callback]:
    """Callbacks the optimizer config needs: EMA weights for validation, the plateau rule."""
    callbacks: list[keras.callbacks.Callback] = []
    if cfg.use_ema:  # validate (and prune on) the averaged weights that will be kept
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if cfg.schedule.name == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=cfg.schedule.gamma,
                patience=cfg.schedule.patience,
                min_lr=cfg.lr * cfg.schedule.min_lr_ratio,
            )
        )
    return callbacks
