"""In-process benchmarks: training throughput against bare Keras, and the data cache.

The ceiling for ``satsweep train`` is a bare ``model.fit`` on the same cached
arrays through a plain ``tf.data`` pipeline: same model, optimiser, epochs, batch
size and validation data, without satsweep's callbacks, metrics or logging.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from satsweep.benchmarks.harness import Comparison, alternate, at_least, median
from satsweep.config import load_run_config
from satsweep.data import Dataset, Split, load_data
from satsweep.data.cache import DecodedArrays, cache_path, load_or_decode
from satsweep.data.catalog import build_catalog
from satsweep.data.decode import decode_catalog
from satsweep.models import build_model
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
    "trainer.augment.flip=false",
    "trainer.augment.rot90=false",
    "tracking.log_model=false",
]
CACHE = ["data=aid", "data.image_size=32", "data.max_per_class=40"]  # 1,200 images


def throughput(outputs: Path, repeats: int, extra: Sequence[str]) -> Comparison:
    """satsweep's training against a bare ``model.fit`` of the same model on the same data."""
    cfg = load_run_config([*THROUGHPUT, f"paths.outputs={outputs}", *extra])
    dataset = load_data(cfg)
    satsweep = lambda: train(cfg, dataset=dataset).images_per_second  # noqa: E731
    images = len(dataset.train) * cfg.trainer.epochs
    bare = lambda: images / bare_fit(cfg, dataset)  # noqa: E731
    satsweep(), bare()  # warm-up: graph tracing and the first-epoch caches
    ours, theirs = alternate(satsweep, bare, repeats)
    ratio = median(ours) / median(theirs)
    goal, met = at_least(ratio, 0.95)
    return Comparison(
        name="training throughput",
        a_label="satsweep train",
        a=median(ours),
        b_label="bare Keras",
        b=median(theirs),
        unit="images/s",
        ratio=ratio,
        ratio_means="A/B",
        goal=goal,
        met=met,
        repeats=repeats,
        note=f"{cfg.data.name} {cfg.data.image_size}px, {len(dataset.train)} images, "
        f"{cfg.trainer.epochs} epochs, batch {cfg.trainer.batch_size}",
    )


def bare_fit(cfg: RunConfig, dataset: Dataset) -> float:
    """The ceiling: ``model.fit`` on a shuffled, batched, prefetched ``tf.data`` pipeline.

    Returns the seconds of ``model.fit`` alone, as ``fit_seconds`` counts them for a run.
    """
    prepare_run(cfg.seed, cfg.trainer.deterministic, cfg.trainer.precision)
    model = build_model(cfg.model, dataset.image_shape, dataset.num_classes)
    steps = math.ceil(len(dataset.train) / cfg.trainer.batch_size)
    compile_model(model, cfg, steps, phases(cfg, 0)[0])  # the same loss, metrics, optimizer
    started = time.perf_counter()
    model.fit(
        _pipeline(dataset.train, dataset.num_classes, cfg.trainer.batch_size, shuffle=True),
        validation_data=_pipeline(dataset.val, dataset.num_classes, cfg.trainer.batch_size),
        epochs=cfg.trainer.epochs,
        verbose=0,
        shuffle=False,  # the tf.data pipeline shuffles; Keras warns that it would not
    )
    return time.perf_counter() - started


def _pipeline(split: Split, classes: int, batch: int, shuffle: bool = False) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices((split.images, tf.one_hot(split.labels, classes)))
    if shuffle:
        data = data.shuffle(len(split), seed=0)
    return data.batch(batch).prefetch(tf.data.AUTOTUNE)


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
