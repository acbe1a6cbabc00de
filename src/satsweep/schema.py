"""Typed configuration objects.

Hydra composes YAML into an untyped ``DictConfig``; :mod:`satsweep.config`
validates it once against these models, and everything downstream receives
them. Defaults live in the YAML files under ``conf/``, never here: every field is
required, so a key missing from YAML is an error rather than a silent default,
and an unknown key is an error rather than a typo that is ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]
LearningRate = Annotated[float, Field(gt=0.0)]
# numpy, scikit-learn and Optuna take seeds in [0, 2**32); runs derive seed + k from it.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
# Batch-norm moving statistics: mean <- momentum * mean + (1 - momentum) * batch mean.
# Keras' 0.99 needs ~500 steps to forget its initial values; short runs see far fewer.
BatchNormMomentum = Annotated[float, Field(ge=0.0, lt=1.0)]
Width = Annotated[int, Field(ge=1, le=1024)]
Growth = Annotated[float, Field(ge=1.0, le=4.0)]
StemStride = Literal[1, 2, 4]


class Strict(BaseModel):
    """Base for every config node: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(Strict):
    """How images are split into train, validation and test (``data.split``)."""

    train: Annotated[float, Field(gt=0.0, lt=1.0)]
    val: Annotated[float, Field(gt=0.0, lt=1.0)]
    test: Annotated[float, Field(gt=0.0, lt=1.0)]
    seed: Seed

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train+val+test sum to {total:g}, not 1: "
                "adjust data.split.train, data.split.val or data.split.test"
            )
        return self


def _bare_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{name!r} must be a plain file or folder name, without a path")
    return name


# Downloads land beside data.path and nowhere else, whatever a config says.
BareName = Annotated[str, AfterValidator(_bare_name)]
# Study and experiment names become folder names and MLflow names.
SafeName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        max_length=200,
        description="letters, digits, '_', '-' and '.', not starting with '.' or '-'",
    ),
]


class DownloadConfig(Strict):
    """Where a dataset is downloaded from, and the checksum it must match."""

    enabled: bool
    url: str
    checksum: Annotated[str, Field(pattern=r"^(md5|sha256):[0-9a-f]+$")]
    filename: BareName  # the archive, saved beside the dataset folder
    subdir: BareName  # the archive's top folder


class DataConfig(Strict):
    """Which images a run sees: the dataset, its classes and size, the split."""

    name: str
    format: Literal["folder", "shipsnet_json"]
    path: str
    image_size: Annotated[int, Field(ge=8, le=1024)]
    chip_size: PositiveInt | None
    classes: list[str] | None
    positive_classes: list[str] | None
    negative_ratio: Annotated[float, Field(gt=0.0)] | None
    max_per_class: PositiveInt | None
    # a budget of images spread evenly over the classes: searches cost the same, and
    # validate on as many images, whatever the number of classes
    max_images: PositiveInt | None
    # a cheaper search that is judged on the final fit's own validation images: the
    # share of the training split kept (per class, drawn with the split's seed)
    train_share: Annotated[float, Field(gt=0.0, le=1.0)]
    split: SplitConfig
    download: DownloadConfig | None
    source: str | None  # where to get the dataset, told when it is missing

    @property
    def is_binary(self) -> bool:
        """Two classes: runs then log the binary metrics and the threshold sweep too."""
        return bool(self.positive_classes)

    @model_validator(mode="after")
    def _classes_named_once(self) -> DataConfig:
        for key, names in (("classes", self.classes), ("positive_classes", self.positive_classes)):
            twice = sorted({name for name in names or [] if (names or []).count(name) > 1})
            if twice:
                raise ValueError(f"data.{key} names {twice[0]!r} twice: list each class once")
        return self


class CNNConfig(Strict):
    """A VGG-style CNN (``model=cnn``)."""

    name: Literal["cnn"]
    blocks: Annotated[int, Field(ge=1, le=8)]
    filters: PositiveInt
    filters_growth: Annotated[float, Field(ge=1.0, le=4.0)]
    kernel_size: Annotated[int, Field(ge=1, le=11)]
    convs_per_block: Annotated[int, Field(ge=1, le=4)]
    batch_norm: bool
    bn_momentum: BatchNormMomentum
    dropout: DropoutRate
    dense_units: NonNegativeInt
    pooling: Literal["avg", "max", "flatten"]


class MLPConfig(Strict):
    """A multi-layer perceptron on the pixels (``model=mlp``): the simplest learner."""

    name: Literal["mlp"]
    hidden_units: list[PositiveInt]
    dropout: DropoutRate
    batch_norm: bool
    bn_momentum: BatchNormMomentum


class ResNetConfig(Strict):
    """A pre-activation ResNet: ``stages`` of ``blocks_per_stage`` residual blocks."""

    name: Literal["resnet"]
    stages: Annotated[int, Field(ge=1, le=5)]
    width: Width  # filters of the first stage
    width_growth: Growth  # each stage multiplies the filters by this
    blocks_per_stage: Annotated[int, Field(ge=1, le=8)]
    stem_stride: StemStride  # the stem downsamples by this: 2 makes 32 px runs ~2.5x faster
    bn_momentum: BatchNormMomentum
    dropout: DropoutRate


class SeparableConfig(Strict):
    """MobileNetV2-style inverted residual blocks with depthwise-separable convolutions."""

    name: Literal["separable"]
    stages: Annotated[int, Field(ge=1, le=5)]
    width: Width
    width_growth: Growth
    blocks_per_stage: Annotated[int, Field(ge=1, le=8)]
    expansion: Annotated[int, Field(ge=1, le=8)]  # channels inside a block, as a multiple
    stem_stride: StemStride
    bn_momentum: BatchNormMomentum
    dropout: DropoutRate


class BackboneConfig(Strict):
    """A ``keras.applications`` network under a fresh classifier head."""

    name: Literal["backbone"]
    architecture: Literal["EfficientNetV2B0", "MobileNetV3Small", "ResNet50V2"]
    weights: str | None  # null (random), imagenet (Keras downloads), or a weights file path
    input_size: Annotated[int, Field(ge=32, le=1024)]  # smaller images are upsized to this
    freeze_epochs: NonNegativeInt  # epochs with the backbone frozen, then it fine-tunes
    fine_tune_lr_ratio: Annotated[float, Field(gt=0.0, le=1.0)]  # lr factor once unfrozen
    bn_momentum: BatchNormMomentum
    dropout: DropoutRate


ModelConfig = Annotated[
    CNNConfig | MLPConfig | ResNetConfig | SeparableConfig | BackboneConfig,
    Field(discriminator="name"),
]


class ScheduleConfig(Strict):
    """The learning-rate schedule: warm-up, then cosine, one-cycle or constant."""

    name: Literal["constant", "cosine", "onecycle", "step", "plateau"]
    warmup_epochs: Annotated[float, Field(ge=0.0)]  # constant, cosine, onecycle: linear warm-up
    step_epochs: PositiveInt
    gamma: Annotated[float, Field(gt=0.0, le=1.0)]
    min_lr_ratio: Fraction
    patience: PositiveInt

    @model_validator(mode="after")
    def _warmup_where_supported(self) -> ScheduleConfig:
        if self.warmup_epochs > 0 and self.name in ("step", "plateau"):
            raise ValueError(
                f"schedule {self.name} has no warm-up: add optimizer.schedule.warmup_epochs=0 "
                "or use optimizer.schedule.name=cosine"
            )
        return self


class OptimizerCommon(Strict):
    """Knobs every optimizer has (Keras' base ``Optimizer`` arguments)."""

    lr: LearningRate
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)]  # decoupled, as in AdamW
    use_ema: bool  # evaluate an exponential moving average of the weights
    ema_momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    schedule: ScheduleConfig


class AdamConfig(OptimizerCommon):
    """Adam (``optimizer=adam``)."""

    name: Literal["adam"]
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]


class AdamWConfig(OptimizerCommon):
    """AdamW, Adam with decoupled weight decay (``optimizer=adamw``)."""

    name: Literal["adamw"]
    beta_1: Annotated[float, Field(ge=0.0, lt=1.0)]
    beta_2: Annotated[float, Field(ge=0.0, lt=1.0)]


class SGDConfig(OptimizerCommon):
    """SGD with momentum (``optimizer=sgd``)."""

    name: Literal["sgd"]
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    nesterov: bool


class RMSpropConfig(OptimizerCommon):
    """RMSprop (``optimizer=rmsprop``)."""

    name: Literal["rmsprop"]
    rho: Annotated[float, Field(gt=0.0, lt=1.0)]
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]


OptimizerConfig = Annotated[
    AdamConfig | AdamWConfig | SGDConfig | RMSpropConfig, Field(discriminator="name")
]


class AugmentConfig(Strict):
    """Training-time augmentation; evaluation never sees it."""

    flip: bool
    rot90: bool
    translate: Annotated[float, Field(ge=0.0, le=0.5)]  # shift, fraction of the size, reflected
    brightness: Fraction  # random brightness change, fraction of the pixel range
    contrast: Fraction  # random contrast factor in [1 - contrast, 1 + contrast]
    mixup: Annotated[float, Field(ge=0.0)]  # MixUp's alpha; 0 = off
    cutmix: Annotated[float, Field(ge=0.0)]  # CutMix's factor; 0 = off

    @property
    def per_image(self) -> bool:
        """Whether any per-image augmentation is on (the pipeline then maps over images)."""
        return (
            self.flip
            or self.rot90
            or self.translate > 0
            or self.brightness > 0
            or (self.contrast > 0)
        )


class ThresholdConfig(Strict):
    """How a binary task's decision threshold is chosen on the validation split."""

    metric: Literal["f1", "recall", "precision"]  # of the positive class
    target: Annotated[float, Field(gt=0.0, le=1.0)] | None  # for recall and precision

    @model_validator(mode="after")
    def _target_for_a_target_metric(self) -> ThresholdConfig:
        if self.metric != "f1" and self.target is None:
            raise ValueError(
                f"trainer.threshold.metric={self.metric} needs trainer.threshold.target "
                f"(the {self.metric} to reach on validation, e.g. 0.9)"
            )
        if self.metric == "f1" and self.target is not None:
            raise ValueError(
                "trainer.threshold.target is for metric=recall or precision: F1 is maximised"
            )
        return self


class TrainerConfig(Strict):
    """How a model is fitted and evaluated: epochs, batch size, early stopping, TTA, threads."""

    epochs: PositiveInt
    batch_size: PositiveInt
    # evaluation batches (each epoch's validation, the final predictions): no gradients are
    # kept, so they can be larger than training's, and fewer calls cost less
    eval_batch_size: PositiveInt
    # a small training set is passed over several times per epoch to reach this many steps
    min_steps_per_epoch: NonNegativeInt
    early_stopping_patience: NonNegativeInt
    monitor: Literal["val_f1_macro", "val_accuracy", "val_loss", "f1_macro", "accuracy", "loss"]
    deterministic: bool
    class_weights: bool
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)]
    augment: AugmentConfig
    tta: Literal["none", "flips", "dihedral"]  # predictions averaged over transformed inputs
    threshold: ThresholdConfig  # binary tasks: the decision threshold, chosen on validation
    # batch-norm statistics recomputed from this many training images for each epoch's
    # validation (0: Keras' moving averages, which lag the weights in short runs)
    precise_bn_images: NonNegativeInt
    threads: NonNegativeInt
    # Keras' dtype policy: mixed precision computes in 16 bits, keeps weights in 32
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"]
    jit_compile: bool  # XLA compilation of the train step
    verbose: Annotated[int, Field(ge=0, le=2)]

    @model_validator(mode="after")
    def _xla_needs_nondeterminism(self) -> TrainerConfig:
        # Keras silently drops jit_compile under TensorFlow's op determinism.
        if self.jit_compile and self.deterministic:
            raise ValueError(
                "trainer.jit_compile=true needs trainer.deterministic=false "
                "(Keras does not XLA-compile under TensorFlow's op determinism)"
            )
        return self


class TrackingConfig(Strict):
    """The MLflow store runs are logged to, and what each run logs."""

    uri: str
    artifact_root: str
    ui: str  # the MLflow UI's address, for the links satsweep prints
    experiment: SafeName
    log_model: bool
    error_analysis: bool
    # seconds between attempts of a write the store refused; then it spools or fails
    retry_seconds: list[Annotated[float, Field(ge=0.0, le=600.0)]]


class StorageConfig(Strict):
    """The Optuna storage studies live in, and how dead workers' trials are retried."""

    url: str
    heartbeat_interval: PositiveInt | None
    grace_period: PositiveInt | None
    failed_trial_max_retry: NonNegativeInt
    reconnect_seconds: NonNegativeInt  # a database that refuses connections is retried this long


class PathsConfig(Strict):
    """Where outputs, datasets and the decode cache live."""

    outputs: str
    data_dir: str
    cache: str


class Environment(Strict):
    """Where commands read and write: folders, the MLflow store and the Optuna storage.

    Commands that only look at records (``compare``, ``sync``, study lookups)
    validate this part of the config alone, not a whole training run.
    """

    paths: PathsConfig
    tracking: TrackingConfig
    storage: StorageConfig


class RunConfig(Strict):
    """Everything one training run needs: the experiment plus where it is logged."""

    seed: Seed
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
