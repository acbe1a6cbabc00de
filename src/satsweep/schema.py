"""Typed configuration objects.

Hydra composes YAML into an untyped ``DictConfig``; :mod:`satsweep.config`
validates it once against these models, and everything downstream receives
them. Defaults live in the YAML files under ``conf/``, never here: every field is
required, so a key missing from YAML is an error rather than a silent default,
and an unknown key is an error rather than a typo that is ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]
LearningRate = Annotated[float, Field(gt=0.0)]


class Strict(BaseModel):
    """Base for every config node: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(Strict):
    train: Annotated[float, Field(gt=0.0, lt=1.0)]
    val: Annotated[float, Field(gt=0.0, lt=1.0)]
    test: Annotated[float, Field(gt=0.0, lt=1.0)]
    seed: int

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train+val+test sum to {total:g}, not 1: "
                "adjust data.split.train, data.split.val or data.split.test"
            )
        return self


class DownloadConfig(Strict):
    enabled: bool
    url: str
    checksum: Annotated[str, Field(pattern=r"^(md5|sha256):[0-9a-f]+$")]
    filename: str
    subdir: str


class DataConfig(Strict):
    name: str
    format: Literal["folder", "shipsnet_json"]
    path: str
    image_size: Annotated[int, Field(ge=8, le=1024)]
    chip_size: PositiveInt | None
    classes: list[str] | None
    positive_classes: list[str] | None
    negative_ratio: Annotated[float, Field(gt=0.0)] | None
    max_per_class: PositiveInt | None
    split: SplitConfig
    download: DownloadConfig | None

    @property
    def is_binary(self) -> bool:
        return bool(self.positive_classes)


class CNNConfig(Strict):
    name: Literal["cnn"]
    blocks: Annotated[int, Field(ge=1, le=8)]
    filters: PositiveInt
    filters_growth: Annotated[float, Field(ge=1.0, le=4.0)]
    kernel_size: Annotated[int, Field(ge=1, le=11)]
    convs_per_block: Annotated[int, Field(ge=1, le=4)]
    batch_norm: bool
    dropout: DropoutRate
    dense_units: NonNegativeInt
    pooling: Literal["avg", "max", "flatten"]


class MLPConfig(Strict):
    name: Literal["mlp"]
    hidden_units: list[PositiveInt]
    dropout: DropoutRate
    batch_norm: bool


ModelConfig = Annotated[CNNConfig | MLPConfig, Field(discriminator="name")]


class ScheduleConfig(Strict):
    name: Literal["constant", "cosine", "step", "plateau"]
    step_epochs: PositiveInt
    gamma: Annotated[float, Field(gt=0.0, le=1.0)]
    min_lr_ratio: Fraction
    patience: PositiveInt


class AdamConfig(Strict):
    name: Literal["adam"]
    lr: LearningRate
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]
    schedule: ScheduleConfig


class AdamWConfig(Strict):
    name: Literal["adamw"]
    lr: LearningRate
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    schedule: ScheduleConfig


class SGDConfig(Strict):
    name: Literal["sgd"]
    lr: LearningRate
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    nesterov: bool
    schedule: ScheduleConfig


class RMSpropConfig(Strict):
    name: Literal["rmsprop"]
    lr: LearningRate
    rho: Annotated[float, Field(gt=0.0, lt=1.0)]
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    schedule: ScheduleConfig


OptimizerConfig = Annotated[
    AdamConfig | AdamWConfig | SGDConfig | RMSpropConfig, Field(discriminator="name")
]


class AugmentConfig(Strict):
    flip: bool
    rot90: bool


class TrainerConfig(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt
    early_stopping_patience: NonNegativeInt
    monitor: str
    deterministic: bool
    class_weights: bool
    augment: AugmentConfig
    threads: NonNegativeInt
    verbose: Annotated[int, Field(ge=0, le=2)]


class TrackingConfig(Strict):
    uri: str
    artifact_root: str
    experiment: str
    log_model: bool
    error_analysis: bool


class StorageConfig(Strict):
    url: str
    heartbeat_interval: PositiveInt | None
    grace_period: PositiveInt | None
    failed_trial_max_retry: NonNegativeInt


class PathsConfig(Strict):
    outputs: str
    data_dir: str
    cache: str


class RunConfig(Strict):
    """Everything one training run needs: the experiment plus where it is logged."""

    seed: int
    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    trainer: TrainerConfig
    tracking: TrackingConfig
    storage: StorageConfig
    paths: PathsConfig


def experiment_keys() -> tuple[str, ...]:
    """Top-level keys that define *what* is trained, as opposed to where it is logged."""
    return ("seed", "data", "model", "optimizer", "trainer")


def as_plain(value: Any) -> Any:
    """A config model as plain Python containers, for logging and YAML."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
