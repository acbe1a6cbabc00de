"""One training run: fit, evaluate and log. Knows nothing of Optuna.

``satsweep train``, every sweep trial and ``reproduce`` all go through
:func:`fit_and_log`, so a trial's numbers are exactly what a single run gives.
Callers add behaviour through Keras callbacks (a sweep adds its pruning callback).
"""

from __future__ import annotations

import getpass
import html
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from satsweep import tta
from satsweep.analysis.confusion import confusion_table
from satsweep.analysis.diagnosis import Evidence, Finding, as_markdown, diagnose, one_line
from satsweep.analysis.errors import ERROR_ANALYSIS, analyse_errors
from satsweep.baseline import Floor, cached_floor
from satsweep.batchnorm import PreciseBatchNorm, Recomputer
from satsweep.data import Dataset, load_data
from satsweep.links import announce, run_link
from satsweep.metrics import FINAL_VAL, RESULT_PREFIXES, Evaluation, evaluate_predictions, prefixed
from satsweep.models import CAPACITY_KNOBS, build_model, set_backbone_trainable
from satsweep.optim import build_optimizer, optimizer_callbacks, unwrap_schedule
from satsweep.pipeline import (
    evaluation_dataset,
    passes_per_epoch,
    statistics_sample,
    steps_per_epoch,
    training_dataset,
)
from satsweep.provenance import git_state, package_versions
from satsweep.redact import redact_tree
from satsweep.run_figures import log_figures, log_test_probabilities
from satsweep.runtime import accelerator, prepare_run
from satsweep.schema import BackboneConfig, RunConfig, as_plain, experiment_keys
from satsweep.threshold import decision_metrics
from satsweep.tracking import TAG_PREFIX, Tracker, flatten

LOG = logging.getLogger(__name__)
MACHINE_PARAMS = ("data.path", "data.download", "data.source")  # kept out of the run's params


@dataclass(frozen=True)
class TrainResult:
    """One run's outcome: its metrics, the MLflow run and link, and the diagnosis."""

    run_id: str
    metrics: dict[str, float]
    history: dict[str, list[float]]
    epochs_run: int
    test: Evaluation
    class_names: tuple[str, ...]
    seconds: float
    images_per_second: float = 0.0
    diagnosis: list[Finding] = field(default_factory=list)
    link: str = ""  # the run's page in the MLflow UI, once the caller knows its experiment

    def _repr_html_(self) -> str:
        """In a notebook: the final metrics, what to try next, and the run's page."""
        rows = "".join(
            f"<tr><td>{name}</td><td>{value:.4f}</td></tr>"
            for name, value in sorted(self.metrics.items())
            if name.startswith(RESULT_PREFIXES)
        )
        where = f'<a href="{self.link}">{self.run_id}</a>' if self.link else self.run_id
        return (
            f"<p>{len(self.class_names)} classes, {self.epochs_run} epochs, "
            f"{self.seconds:.1f}s; MLflow run {where}</p>"
            f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"
            + (f"<p>{html.escape(one_line(self.diagnosis))}</p>" if self.diagnosis else "")
        )


@dataclass(frozen=True)
class ArtifactPlan:
    """What a finished run logs beyond its metrics, tables and test predictions.

    Decided once its scores are known: a sweep's trial behind the best logs no
    model, and its best trial's figures are drawn when the sweep ends.
    """

    figures: bool  # the confusion matrix and error analysis's (about 1 s at 30 classes)
    model: bool


EVERYTHING = ArtifactPlan(figures=True, model=True)
EPOCH_SHOWN = ("loss", "val_loss", "val_f1_macro")  # what each epoch's log line says


class EpochLogger(keras.callbacks.Callback):
    """Logs Keras' per-epoch metrics (and the learning rate) to the run as they happen.

    Each epoch also says where the run is (``epoch 3/20 ... about 85 s left``) in
    the process's log: a long run (a final fit, a reproduce) shows it is alive.
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        super().__init__()
        self.tracker = tracker
        self.run_id = run_id
        self.epoch_started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Start the epoch's clock, for the log line."""
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Log the epoch's metrics as MLflow steps, so the UI draws learning curves."""
        metrics = dict(logs or {})
        metrics["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)
        LOG.info(
            "%s",
            epoch_line(
                epoch,
                int(self.params.get("epochs") or 0),
                metrics,
                time.perf_counter() - self.epoch_started,
            ),
        )


def epoch_line(epoch: int, epochs: int, metrics: Mapping[str, float], seconds: float) -> str:
    """``epoch 3/20: loss 1.2345, val_f1_macro 0.4567 (4.2 s; about 71 s left)``."""
    shown = [f"{key} {metrics[key]:.4f}" for key in EPOCH_SHOWN if key in metrics]
    left = f"; about {seconds * max(0, epochs - epoch - 1):.0f} s left" if epochs else ""
    return f"epoch {epoch + 1}/{epochs or '?'}: {', '.join(shown)} ({seconds:.1f} s{left})"


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN, remembering that it fired so the run can be failed.

    ``async_safe`` lets Keras check each batch's loss on its callback thread: a
    per-batch hook would otherwise make every step wait for the loss to reach
    Python, which stalls an accelerator's queue (on 2 CPU cores it made no
    measurable difference).
    """

    async_safe = True
    fired = False

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """A NaN or infinite loss ends the fit at once: the trial fails, not trains on noise."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.fired = True
        super().on_batch_end(batch, logs)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run diverged (often: learning rate too high)."""


def run_tags(cfg: RunConfig, dataset: Dataset) -> dict[str, str]:
    """Provenance tags every run carries."""
    commit, dirty = git_state(Path.cwd())
    tags = {
        f"{TAG_PREFIX}seed": str(cfg.seed),
        f"{TAG_PREFIX}data_digest": dataset.digest,
        f"{TAG_PREFIX}data": dataset.name,
        f"{TAG_PREFIX}deterministic": str(cfg.trainer.deterministic).lower(),
        f"{TAG_PREFIX}git_commit": commit,
        f"{TAG_PREFIX}git_dirty": str(dirty).lower(),
        f"{TAG_PREFIX}cpu_count": str(os.cpu_count()),
        f"{TAG_PREFIX}device": accelerator(),
        "mlflow.source.git.commit": commit,
        "mlflow.source.name": "satsweep",  # the UI's "Source" column
        "mlflow.source.type": "LOCAL",
        "mlflow.user": getpass.getuser(),  # the UI's "Created by" column
    }
    tags.update({f"{TAG_PREFIX}version.{k}": v for k, v in package_versions().items()})
    return tags


def experiment_params(plain: dict[str, Any]) -> dict[str, Any]:
    """The flat params that define what is trained, for the MLflow UI's columns.

    Where things are (data folder, download source) and where they are logged
    (tracking, storage, paths) are the same in every trial and say nothing about
    the experiment: they stay in ``config.yaml`` only.
    """
    flat = flatten({key: plain[key] for key in experiment_keys()})
    return {k: v for k, v in flat.items() if not k.startswith(MACHINE_PARAMS)}


def log_run_inputs(tracker: Tracker, run_id: str, cfg: RunConfig, dataset: Dataset) -> None:
    """What defines the run, logged before training so that the UI shows it at once."""
    plain = redact_tree(as_plain(cfg))
    tracker.log_params(run_id, experiment_params(plain))
    tracker.log_yaml(run_id, plain, "config.yaml")
    tracker.set_tags(run_id, run_tags(cfg, dataset))
    tracker.log_dataset(run_id, dataset.name, dataset.digest, str(cfg.data.path))


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one optimizer: a backbone trains its head first, frozen."""

    first_epoch: int
    end_epoch: int
    backbone_trainable: bool
    lr_scale: float


def phases(cfg: RunConfig, initial_epoch: int) -> list[Phase]:
    """One phase; two for a backbone with ``freeze_epochs`` (frozen, then fine-tuned)."""
    epochs, model = cfg.trainer.epochs, cfg.model
    if isinstance(model, BackboneConfig) and initial_epoch < model.freeze_epochs < epochs:
        return [
            Phase(initial_epoch, model.freeze_epochs, False, 1.0),
            Phase(model.freeze_epochs, epochs, True, model.fine_tune_lr_ratio),
        ]
    frozen = isinstance(model, BackboneConfig) and model.freeze_epochs >= epochs
    return [Phase(initial_epoch, epochs, not frozen, 1.0)]


def compile_model(model: keras.Model, cfg: RunConfig, steps: int, phase: Phase) -> None:
    """Compile for one phase: its optimizer and schedule span exactly the phase's epochs."""
    set_backbone_trainable(model, phase.backbone_trainable)
    model.compile(
        optimizer=build_optimizer(
            cfg.optimizer, steps, phase.end_epoch - phase.first_epoch, phase.lr_scale
        ),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.trainer.label_smoothing),
        metrics=["accuracy", keras.metrics.F1Score(average="macro", name="f1_macro")],
        jit_compile=cfg.trainer.jit_compile,
    )
    # Eagerly: created inside the first traced step, its slot variables cost 0.4 s there.
    model.optimizer.build(model.trainable_variables)


def fit_and_log(
    cfg: RunConfig,
    dataset: Dataset,
    tracker: Tracker,
    run_id: str,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    floor: Floor | None = None,
    model_name: str = "model",
    plan_artifacts: Callable[[Mapping[str, float]], ArtifactPlan] | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``dataset`` inside the existing MLflow run ``run_id``.

    Exceptions raised by callbacks (an Optuna prune, say) propagate after the
    epochs so far have been logged. ``initial_epoch`` is for runs that continue
    earlier weights (KerasTuner's Hyperband rounds): epochs are numbered from it.
    ``floor``, the no-learning baseline of this split, lets the diagnosis say
    when a model is weak for its task. The model is logged as ``model_name``
    after the results, so that MLflow attaches them to it. ``plan_artifacts``, given
    the run's metrics, says whether its figures and its model are worth their
    seconds (by default they are); metrics, tables and test predictions are always
    logged.
    """
    started = time.perf_counter()
    log_run_inputs(tracker, run_id, cfg, dataset)
    prepare_run(cfg.seed, cfg.trainer.deterministic, cfg.trainer.precision, cfg.trainer.threads)
    trainer = cfg.trainer
    if trainer.batch_size > len(dataset.train):
        LOG.warning(
            "trainer.batch_size=%d is larger than the training split (%d images): each step "
            "takes the whole split once, as Keras does",
            trainer.batch_size,
            len(dataset.train),
        )
    model = build_model(cfg.model, dataset.image_shape, dataset.num_classes)
    passes = passes_per_epoch(len(dataset.train), trainer.batch_size, trainer.min_steps_per_epoch)
    steps = steps_per_epoch(len(dataset.train), trainer.batch_size, passes)
    # tags, not metrics: constants of the run, which MLflow's compare view would chart
    tracker.set_tags(
        run_id, {f"{TAG_PREFIX}steps_per_epoch": steps, f"{TAG_PREFIX}passes_per_epoch": passes}
    )
    nan_guard = StopOnNonFiniteLoss()
    callbacks = [
        *_precise_batchnorm(cfg, dataset),  # first: validation sees the recomputed statistics
        EpochLogger(tracker, run_id),
        nan_guard,
        *_stopping(cfg),
        *optimizer_callbacks(cfg.optimizer),
        *extra_callbacks,
    ]
    train_data = training_dataset(
        dataset.train, dataset.num_classes, trainer.batch_size, trainer.augment, cfg.seed, passes
    )
    val_data = evaluation_dataset(dataset.val, dataset.num_classes, trainer.eval_batch_size)
    history: dict[str, list[float]] = {}
    fit_started = time.perf_counter()
    for phase in phases(cfg, initial_epoch):
        compile_model(model, cfg, steps, phase)
        fitted = model.fit(
            train_data,
            validation_data=val_data,
            epochs=phase.end_epoch,
            initial_epoch=phase.first_epoch,
            class_weight=_class_weights(dataset) if trainer.class_weights else None,
            callbacks=callbacks,
            verbose=trainer.verbose,
            shuffle=False,  # the tf.data pipeline shuffles, reproducibly
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        if model.stop_training or nan_guard.fired:
            break
    fit_seconds = time.perf_counter() - fit_started
    unwrap_schedule(model.optimizer)  # the model logged below loads in plain Keras
    epochs_trained = len(history.get("loss", []))
    epochs_run = initial_epoch + epochs_trained
    if nan_guard.fired:
        raise NonFiniteLossError(
            f"loss became NaN or infinite in epoch {epochs_run}: lower optimizer.lr "
            f"(now {cfg.optimizer.lr:g})"
        )
    metrics, test = _evaluate_and_log(model, cfg, dataset, tracker, run_id, epochs_run)
    if floor is not None:
        metrics.update(floor.logged)
        tracker.log_metrics(run_id, floor.logged, step=epochs_run)
    plan = plan_artifacts(metrics) if plan_artifacts else EVERYTHING
    confusion = confusion_table(test.confusion, dataset.class_names)
    tracker.log_text(run_id, confusion.to_csv(), "confusion_matrix.csv")
    log_test_probabilities(tracker, run_id, test.probabilities)
    diagnosis = (
        _analyse_and_log(tracker, run_id, dataset, test, history, metrics, cfg, floor, epochs_run)
        if cfg.tracking.error_analysis
        else []
    )
    if plan.figures:
        log_figures(
            tracker,
            run_id,
            dataset,
            test,
            cfg.tracking.error_analysis,
            metrics.get(f"{FINAL_VAL}_threshold", 0.5),
        )
    if cfg.tracking.log_model and plan.model:  # after the results, which MLflow attaches to it
        tracker.log_keras_model(run_id, model, model_name, step=epochs_run)
    seconds = time.perf_counter() - started  # the model's upload included
    metrics.update(
        params_count=float(model.count_params()), seconds=seconds, fit_seconds=fit_seconds
    )
    tracker.log_metrics(
        run_id, {k: metrics[k] for k in ("params_count", "seconds", "fit_seconds")}, step=epochs_run
    )
    return TrainResult(
        run_id=run_id,
        metrics=metrics,
        history=history,
        epochs_run=epochs_run,
        test=test,
        class_names=dataset.class_names,
        seconds=seconds,
        images_per_second=len(dataset.train) * passes * epochs_trained / max(fit_seconds, 1e-9),
        diagnosis=diagnosis,
    )


def _stopping(cfg: RunConfig) -> list[keras.callbacks.Callback]:
    if cfg.trainer.early_stopping_patience <= 0:
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor=cfg.trainer.monitor,
            patience=cfg.trainer.early_stopping_patience,
            restore_best_weights=True,
        )
    ]


def batchnorm_sample(cfg: RunConfig, dataset: Dataset, images: int) -> np.ndarray:
    """About ``images`` of the run's augmented training images, for batch-norm statistics."""
    trainer = cfg.trainer
    return statistics_sample(
        dataset.train, dataset.num_classes, trainer.batch_size, trainer.augment, cfg.seed, images
    )


def _precise_batchnorm(cfg: RunConfig, dataset: Dataset) -> list[keras.callbacks.Callback]:
    images = cfg.trainer.precise_bn_images
    if images <= 0:
        return []
    sample = batchnorm_sample(cfg, dataset, images)
    return [PreciseBatchNorm(Recomputer(sample, cfg.trainer.batch_size))]


def _class_weights(dataset: Dataset) -> dict[int, float]:
    """Inverse-frequency weights that average 1 over the training set."""
    counts = np.bincount(dataset.train.labels, minlength=dataset.num_classes)
    total = counts.sum()
    return {i: float(total / (len(counts) * c)) for i, c in enumerate(counts) if c > 0}


def _evaluate_and_log(
    model: keras.Model,
    cfg: RunConfig,
    dataset: Dataset,
    tracker: Tracker,
    run_id: str,
    epochs_run: int,
) -> tuple[dict[str, float], Evaluation]:
    """Final val/test metrics (with ``trainer.tta``) and the per-class report."""
    splits = {"val": dataset.val, "test": dataset.test}
    probabilities = tta.predict_splits(
        model, [s.images for s in splits.values()], cfg.trainer.tta, cfg.trainer.eval_batch_size
    )
    evaluations = {
        name: evaluate_predictions(split.labels, predicted, dataset.class_names)
        for (name, split), predicted in zip(splits.items(), probabilities, strict=True)
    }
    metrics = {
        **prefixed(evaluations["val"].metrics, FINAL_VAL),
        **prefixed(evaluations["test"].metrics, "test"),
        "epochs_run": float(epochs_run),
    }
    if dataset.num_classes == 2:
        metrics.update(_threshold_metrics(cfg, dataset, *probabilities))
    tracker.log_metrics(run_id, metrics, step=epochs_run)
    test = evaluations["test"]
    tracker.log_text(run_id, test.per_class.to_csv(index=False), "per_class_report.csv")
    tracker.log_table(run_id, test.per_class, "per_class_report.json")
    return metrics, test


def _threshold_metrics(
    cfg: RunConfig, dataset: Dataset, val: np.ndarray, test: np.ndarray
) -> dict[str, float]:
    """The decision threshold chosen on validation, and both splits scored at it once."""
    decided = decision_metrics(
        cfg.trainer.threshold,
        (dataset.val.labels, val[:, 1]),
        (dataset.test.labels, test[:, 1]),
    )
    return {  # final_val_threshold, final_val_f1_at_threshold, test_f1_at_threshold, ...
        (f"{FINAL_VAL}_{name.removeprefix('val_')}" if not name.startswith("test_") else name): v
        for name, v in decided.items()
    }


def _analyse_and_log(
    tracker: Tracker,
    run_id: str,
    dataset: Dataset,
    test: Evaluation,
    history: dict[str, list[float]],
    metrics: dict[str, float],
    cfg: RunConfig,
    floor: Floor | None,
    step: int,
) -> list[Finding]:
    """Error analysis and "what to try next", logged under ``error_analysis/`` (figures aside)."""
    analysis = analyse_errors(
        dataset.test.images,
        dataset.test.labels,
        test.probabilities,
        dataset.class_names,
        test.per_class,
        figures=False,
        threshold=metrics.get(f"{FINAL_VAL}_threshold", 0.5),
    )
    for name, table in analysis.tables.items():
        tracker.log_text(run_id, table.to_csv(index=False), f"{ERROR_ANALYSIS}/{name}")
    extra = prefixed(analysis.metrics, "test")
    tracker.log_metrics(run_id, extra, step=step)
    metrics.update(extra)
    findings = diagnose(
        Evidence(
            history=history,
            train_counts=np.bincount(dataset.train.labels, minlength=dataset.num_classes).tolist(),
            test_recall=test.per_class["recall"].tolist(),
            confusion=test.confusion,
            error_confidences=analysis.error_confidences.tolist(),
            class_names=dataset.class_names,
            class_weights=cfg.trainer.class_weights,
            test_f1_macro=metrics["test_f1_macro"],
            floor_f1_macro=floor.metrics["test_f1_macro"] if floor else None,
            augment=cfg.trainer.augment,
            capacity_knobs=CAPACITY_KNOBS[cfg.model.name],
        )
    )
    tracker.log_text(run_id, as_markdown(findings), f"{ERROR_ANALYSIS}/diagnosis.md")
    tracker.set_tags(run_id, {f"{TAG_PREFIX}diagnosis": one_line(findings)[:5000]})
    return findings


def train(
    cfg: RunConfig,
    *,
    dataset: Dataset | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """A top-level MLflow run of ``cfg``, closed as FINISHED or FAILED whatever happens.

    By default it goes to ``tracking.experiment``; ``reproduce`` and ``--from-run``
    place it next to the run they start from. ``callbacks`` join the fit (a
    benchmark's probe, say).
    """
    tracker = Tracker(cfg.tracking)
    tracker.check_reachable()
    dataset = dataset or load_data(cfg)
    floor = cached_floor(dataset, cfg.seed, Path(cfg.paths.cache))
    experiment_id = experiment_id or tracker.experiment_id(cfg.tracking.experiment)
    name = run_name or f"{cfg.model.name}-{cfg.optimizer.name}-{cfg.data.name}"
    run_id = tracker.create_run(experiment_id, name, tags=tags or {})
    try:  # from here on, a stop (SIGINT, SIGTERM) at any moment closes the run
        tracker.set_tags(run_id, {f"{TAG_PREFIX}reproduce_command": f"satsweep reproduce {run_id}"})
        link = run_link(cfg.tracking, experiment_id, run_id)
        announce(f"run {name}", link)
        result = fit_and_log(cfg, dataset, tracker, run_id, callbacks, floor=floor, model_name=name)
    except BaseException as error:
        tracker.end_run(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return replace(result, link=link)
