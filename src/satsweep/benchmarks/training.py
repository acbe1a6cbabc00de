"""In-process benchmarks: training throughput, augmentation and the data cache.

The ceiling for ``satsweep train`` is a bare ``model.fit`` on the same batches
(the run's input pipeline, augmentation included): same model, optimiser,
epochs, batch size and validation data, without satsweep's callbacks, metrics or
logging. The input pipeline has its own ceiling: Keras' augmentation layers
mapped over batches, as the keras-io examples write it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from satsweep.benchmarks.harness import Comparison, alternate, at_least, median, rate_comparison
from satsweep.config import load_run_config
from satsweep.data import Dataset, load_data
from satsweep.data.cache import DecodedArrays, cache_path, load_or_decode
from satsweep.data.catalog import build_catalog
from satsweep.data.decode import decode_catalog
from satsweep.models import build_model
from satsweep.pipeline import (
    evaluation_dataset,
    passes_per_epoch,
    steps_per_epoch,
    training_dataset,
)
from satsweep.runtime import prepare_run
from satsweep.schema import RunConfig
from satsweep.training import compile_model, phases, train

# AID at 32 px, 2,100 training images: a few seconds per epoch on 2 cores.
THROUGHPUT = [
    "data=aid",
    "data.image_size=32",
    "data.max_per_class=100",
    "trainer.epochs=3",
    "trainer.batch_size=32",
    "tracking.log_model=false",
]
CACHE = ["data=aid", "data.image_size=32", "data.max_per_class=40"]  # 1,200 images
AUGMENTATION = ["sweep=quick"]  # the quick trainer's flips, quarter turns and shifts


def throughput(outputs: Path, repeats: int, extra: Sequence[str]) -> Comparison:
    """satsweep's training against a bare ``model.fit`` of the same model on the same data."""
    cfg = load_run_config([*THROUGHPUT, f"paths.outputs={outputs}", *extra])
    dataset = load_data(cfg)
    trainer = cfg.trainer
    passes = passes_per_epoch(len(dataset.train), trainer.batch_size, trainer.min_steps_per_epoch)
    images = len(dataset.train) * passes * trainer.epochs
    return rate_comparison(
        "training throughput",
        ("satsweep train", lambda: train(cfg, dataset=dataset).images_per_second),
        ("bare Keras", lambda: images / bare_fit(cfg, dataset)),
        goal=0.95,
        repeats=repeats,
        note=f"{cfg.data.name} {cfg.data.image_size}px, {len(dataset.train)} images, "
        f"{trainer.epochs} epochs, batch {trainer.batch_size}",
    )


def bare_fit(
    cfg: RunConfig, dataset: Dataset, callbacks: Sequence[keras.callbacks.Callback] = ()
) -> float:
    """The ceiling: one ``model.fit`` on the run's own batches, and nothing else.

    Returns the seconds of ``model.fit`` alone, as ``fit_seconds`` counts them for a
    run. ``callbacks`` are for the benchmarks' own probes (an epoch timer), not satsweep's.
    """
    trainer = cfg.trainer
    prepare_run(cfg.seed, trainer.deterministic, trainer.precision, trainer.threads)
    model = build_model(cfg.model, dataset.image_shape, dataset.num_classes)
    passes = passes_per_epoch(len(dataset.train), trainer.batch_size, trainer.min_steps_per_epoch)
    steps = steps_per_epoch(len(dataset.train), trainer.batch_size, passes)
    compile_model(model, cfg, steps, phases(cfg, 0)[0])  # the same loss, metrics, optimizer
    classes, batch = dataset.num_classes, trainer.batch_size
    started = time.perf_counter()
    model.fit(
        training_dataset(dataset.train, classes, batch, trainer.augment, cfg.seed, passes),
        validation_data=evaluation_dataset(dataset.val, classes, batch),
        epochs=trainer.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles; Keras warns that it would not
        callbacks=list(callbacks),
    )
    return time.perf_counter() - started


class EpochTimer(keras.callbacks.Callback):
    """The seconds of each epoch of a fit, its validation included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """The epoch's clock starts."""
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """The epoch's seconds, its validation included."""
        self.seconds.append(time.perf_counter() - self._started)


def augmentation(outputs: Path, repeats: int, extra: Sequence[str]) -> Comparison:
    """satsweep's augmented batches against Keras' flip and shift layers over plain batches.

    Keras has no quarter-turn layer, so its side does less work: flips and
    reflect-padded shifts only.
    """
    cfg = load_run_config([*AUGMENTATION, f"paths.outputs={outputs}", *extra])
    augment, batch = cfg.trainer.augment, cfg.trainer.batch_size
    assert augment.flip and augment.rot90 and augment.translate > 0, "the quick recipe augments"
    dataset = load_data(cfg)
    train, classes = dataset.train, dataset.num_classes
    ours = training_dataset(train, classes, batch, augment, cfg.seed)
    layers = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=cfg.seed),
            keras.layers.RandomTranslation(
                augment.translate, augment.translate, fill_mode="reflect", seed=cfg.seed
            ),
        ]
    )
    theirs = (
        tf.data.Dataset.from_tensor_slices((train.images, tf.one_hot(train.labels, classes)))
        .shuffle(len(train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(batch)
        .map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return rate_comparison(
        "augmentation",
        ("satsweep pipeline", lambda: len(train) / _seconds_per_pass(ours)),
        ("Keras layers", lambda: len(train) / _seconds_per_pass(theirs)),
        goal=1.0,
        repeats=repeats,
        note=f"{len(train)} images at {cfg.data.image_size}px, batch {batch}, 3 passes each; "
        "satsweep: flips, quarter turns and shifts; Keras: RandomFlip and RandomTranslation",
    )


def _seconds_per_pass(data: tf.data.Dataset, passes: int = 3) -> float:
    started = time.perf_counter()
    for _ in range(passes):
        for _ in data:
            pass
    return (time.perf_counter() - started) / passes


def data_cache(outputs: Path, repeats: int, extra: Sequence[str]) -> Comparison:
    """Loading decoded arrays from the cache against decoding the images again."""
    cfg = load_run_config([*CACHE, f"paths.outputs={outputs}", *extra])
    catalog = build_catalog(cfg.data)
    size = cfg.data.image_size
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        digest = catalog.digest()
        load_or_decode(cache, digest, size, lambda: decode_catalog(catalog, size))
        assert cache_path(cache, digest, size).is_file()

        def cached() -> float:
            started = time.perf_counter()
            load_or_decode(cache, digest, size, _never)
            return time.perf_counter() - started

        def decoded() -> float:
            started = time.perf_counter()
            decode_catalog(catalog, size)
            return time.perf_counter() - started

        from_cache, from_files = alternate(cached, decoded, repeats)
    ratio = median(from_files) / median(from_cache)
    goal, met = at_least(ratio, 20)
    return Comparison(
        name="data cache",
        a_label="cache load",
        a=median(from_cache),
        b_label="full decode",
        b=median(from_files),
        unit="s",
        ratio=ratio,
        ratio_means="B/A: times faster",
        goal=goal,
        met=met,
        repeats=repeats,
        note=f"{len(catalog.sources)} AID images resized to {size}px",
    )


def _never() -> DecodedArrays:
    raise AssertionError("the cache entry was written just before: it must be read")
