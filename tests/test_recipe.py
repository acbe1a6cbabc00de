"""The training recipe's knobs each change what they should, on real models and images."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from satsweep import tta
from satsweep.baseline import HISTOGRAM_BINS, cached_floor, colour_features, no_learning_floor
from satsweep.cli import run
from satsweep.config import load_run_config
from satsweep.data import load_data
from satsweep.models import BACKBONE_LAYER, build_model
from satsweep.optim import OncePerStep, build_optimizer, learning_rate
from satsweep.training import compile_model, phases


@pytest.fixture
def images(outputs, tiny) -> tuple[list[str], np.ndarray, np.ndarray]:
    cfg = load_run_config(tiny)
    dataset = load_data(cfg)
    return tiny, dataset.train.images[:16], dataset.train.labels[:16]


def _model(overrides: list[str], num_classes: int = 4) -> tuple[keras.Model, object]:
    cfg = load_run_config(overrides)
    keras.utils.set_random_seed(0)
    return build_model(cfg.model, (16, 16, 3), num_classes), cfg


def test_label_smoothing_changes_the_loss(images) -> None:
    tiny, x, y = images
    model, cfg = _model(tiny)
    targets = keras.ops.one_hot(y, 4)
    losses = {}
    for smoothing in (0.0, 0.2):
        cfg = load_run_config([*tiny, f"trainer.label_smoothing={smoothing}"])
        compile_model(model, cfg, steps=1, phase=phases(cfg, 0)[0])
        losses[smoothing] = model.evaluate(x, targets, verbose=0, return_dict=True)["loss"]
    assert losses[0.0] != pytest.approx(losses[0.2], abs=1e-4)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(targets, model.predict(x))
    assert losses[0.2] == pytest.approx(float(expected), rel=1e-4)


def test_tta_averages_the_predictions_of_transformed_inputs(images) -> None:
    tiny, x, _ = images
    model, _ = _model(tiny)
    plain = model.predict(x, verbose=0)
    flips = [plain, model.predict(x[:, :, ::-1], verbose=0), model.predict(x[:, ::-1], verbose=0)]
    np.testing.assert_allclose(tta.predict(model, x, "flips", 8), np.mean(flips, axis=0), atol=1e-6)
    np.testing.assert_allclose(tta.predict(model, x, "none", 8), plain, atol=1e-6)
    dihedral = tta.predict(model, x, "dihedral", 8)
    assert len(tta.transforms("dihedral")) == 8
    assert not np.allclose(dihedral, plain, atol=1e-4)  # the network is not symmetric
    turned = [model.predict(np.rot90(x, k, axes=(1, 2)), verbose=0) for k in range(4)]
    flipped = [model.predict(np.rot90(x[:, :, ::-1], k, axes=(1, 2)), verbose=0) for k in range(4)]
    np.testing.assert_allclose(dihedral, np.mean([*turned, *flipped], axis=0), atol=1e-6)


def test_tta_splits_of_any_size_trace_the_prediction_step_once(images) -> None:
    # each split's last batch is partial; blanks fill the stream's last batch instead
    tiny, x, _ = images
    model, _ = _model(tiny)
    splits = [x[:5], x[5:12]]
    together = tta.predict_splits(model, splits, "flips", 4)
    assert model.predict_function.experimental_get_tracing_count() == 1
    for split, probabilities in zip(splits, together, strict=True):
        np.testing.assert_allclose(probabilities, tta.predict(model, split, "flips", 4), atol=1e-6)


@pytest.mark.slow
def test_ema_changes_the_evaluated_weights(images) -> None:
    tiny, x, y = images
    weights = {}
    for ema in (False, True):
        model, cfg = _model([*tiny, f"optimizer.use_ema={str(ema).lower()}"])
        compile_model(model, cfg, steps=4, phase=phases(cfg, 0)[0])
        model.fit(x, keras.ops.one_hot(y, 4), batch_size=4, epochs=2, verbose=0, shuffle=False)
        weights[ema] = [w.copy() for w in model.get_weights()]
        if ema:  # Keras swaps the averaged weights in at the end of fit
            averages = model.optimizer._model_variables_moving_average
            kernel = model.trainable_variables[0]
            index = [v.path for v in model.optimizer._trainable_variables].index(kernel.path)
            np.testing.assert_allclose(kernel.numpy(), averages[index].numpy())
    changed = [not np.allclose(a, b) for a, b in zip(weights[False], weights[True], strict=True)]
    assert any(changed)


def test_bn_momentum_reaches_every_batch_norm_layer(tiny) -> None:
    model, _ = _model([*tiny, "model.bn_momentum=0.8"])
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.8}


@pytest.mark.parametrize("family", ["resnet", "separable", "cnn", "mlp"])
def test_every_model_family_builds_and_predicts(tiny, family) -> None:
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    model, _ = _model([*data_and_trainer, f"model={family}"], num_classes=3)
    out = model.predict(np.zeros((2, 16, 16, 3), np.uint8), verbose=0)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_schedules_warm_up_and_decay_to_zero() -> None:
    for name in ("cosine", "onecycle"):
        cfg = load_run_config([f"optimizer.schedule.name={name}", "optimizer.lr=0.01"])
        schedule = learning_rate(0.01, cfg.optimizer.schedule, steps_per_epoch=10, epochs=5)
        rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
        assert rates[0] < rates[1] < rates[2] == pytest.approx(0.01)  # one epoch of warm-up
        assert rates[2] > rates[3] > rates[4] and rates[4] == pytest.approx(0.0, abs=1e-6)


class CountedCosine(keras.optimizers.schedules.CosineDecay):
    """Keras' warm-up cosine, counting the times a traced step builds it."""

    traced = 0

    def __call__(self, step):
        if not tf.executing_eagerly():
            CountedCosine.traced += 1
        return super().__call__(step)


def _train_steps(schedule, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Three AdamW steps (decoupled weight decay) of a small MLP from a fixed start."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.05)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return model.get_weights(), float(optimizer.learning_rate)


def test_a_traced_step_builds_its_schedule_once_and_trains_the_same() -> None:
    x = np.random.default_rng(0).normal(size=(12, 8)).astype("float32")
    y = np.arange(12) % 3
    builds = {}
    results = {}
    for wrapped in (False, True):
        schedule = CountedCosine(0.0, 10, warmup_target=0.05, warmup_steps=2)
        CountedCosine.traced = 0
        results[wrapped] = _train_steps(OncePerStep(schedule) if wrapped else schedule, x, y)
        builds[wrapped] = CountedCosine.traced
    # Per trace of the step: one build, against one per variable's weight decay (4) + the update.
    assert builds[False] == 5 * builds[True] > 0
    for a, b in zip(results[False][0], results[True][0], strict=True):
        np.testing.assert_array_equal(a, b)  # each step read its own rate: nothing stale
    after_three_steps = 0.05 * (1 + np.cos(0.1 * np.pi)) / 2  # a tenth into the decay
    assert results[True][1] == results[False][1] == pytest.approx(after_three_steps)


def test_the_optimizer_of_a_schedule_survives_serialisation() -> None:
    cfg = load_run_config(["optimizer=adamw", "optimizer.schedule.name=onecycle"])
    optimizer = build_optimizer(cfg.optimizer, steps_per_epoch=10, epochs=5)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored._learning_rate, OncePerStep)
    for step in (0, 7, 30):
        assert float(restored._learning_rate(step)) == float(optimizer._learning_rate(step))


@pytest.mark.slow
def test_backbone_loads_a_local_weights_file_frozen_then_trainable(outputs, tiny, tmp_path) -> None:
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    base = [
        *data_and_trainer,
        "model=backbone",
        "model.input_size=32",
        "model.freeze_epochs=1",
        "trainer.epochs=2",
    ]
    source, _ = _model(base)
    path = tmp_path / "mobilenet.weights.h5"
    source.get_layer(BACKBONE_LAYER).save_weights(path)
    saved = source.get_layer(BACKBONE_LAYER).get_weights()

    keras.utils.set_random_seed(1)  # a different random start: only the file can match
    model, cfg = _model([*base, f"model.weights={path}"])
    loaded = model.get_layer(BACKBONE_LAYER).get_weights()
    assert len(loaded) == len(saved) > 10
    for a, b in zip(loaded, saved, strict=True):
        np.testing.assert_array_equal(a, b)

    frozen, tuned = phases(cfg, 0)
    assert (frozen.end_epoch, tuned.first_epoch, tuned.lr_scale) == (1, 1, 0.1)
    compile_model(model, cfg, steps=1, phase=frozen)
    head_only = len(model.trainable_weights)
    assert not model.get_layer(BACKBONE_LAYER).trainable and head_only == 2  # the Dense head
    compile_model(model, cfg, steps=1, phase=tuned)
    assert model.get_layer(BACKBONE_LAYER).trainable and len(model.trainable_weights) > head_only

    assert run(["train", *base, f"model.weights={path}", "tracking.log_model=false"]) == 0


def test_backbone_weights_errors_are_one_line(outputs, tiny, tmp_path, capsys) -> None:
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    missing = tmp_path / "none.weights.h5"
    assert run(["train", *data_and_trainer, "model=backbone", f"model.weights={missing}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "is not a file" in error and len(error.splitlines()) == 1


def test_no_learning_floor_beats_chance_on_colourful_classes(outputs, tiny) -> None:
    dataset = load_data(load_run_config(tiny))  # beaches, forests, ports and deserts
    floor = no_learning_floor(dataset)
    assert set(floor.logged) >= {"floor_val_f1_macro", "floor_test_f1_macro"}
    assert floor.metrics["val_accuracy"] > 1.5 / dataset.num_classes
    again = no_learning_floor(dataset)
    assert again.metrics == floor.metrics  # the same split gives the same floor


def test_cached_floor_is_fitted_once_per_split_and_seed(outputs, tiny, tmp_path) -> None:
    dataset = load_data(load_run_config(tiny))
    cache = tmp_path / "cache"
    floor = cached_floor(dataset, 0, cache)
    assert floor.metrics == no_learning_floor(dataset, 0).metrics
    (entry,) = cache.glob("floor-*.json")
    planted = {**floor.metrics, "test_f1_macro": 0.123}  # what only a read of the entry gives
    entry.write_text(json.dumps(planted))
    assert cached_floor(dataset, 0, cache).metrics == planted
    cached_floor(dataset, 1, cache)  # another seed: another entry
    assert len(list(cache.glob("floor-*.json"))) == 2
    for damaged in ("{damaged", "{}", '["not", "metrics"]', '{"test_f1_macro": "high"}'):
        entry.write_text(damaged)
        assert cached_floor(dataset, 0, cache).metrics == floor.metrics  # fitted again


def test_colour_features_are_each_images_channel_statistics(images) -> None:
    _, x, _ = images
    features = colour_features(x)
    channels = x.shape[-1]
    for image, row in zip(x, features, strict=True):
        pixels = image.reshape(-1, channels) / 255.0
        np.testing.assert_allclose(row[:channels], pixels.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(row[channels : 2 * channels], pixels.std(axis=0), atol=1e-5)
        for channel in range(channels):
            expected, _ = np.histogram(image[..., channel], bins=HISTOGRAM_BINS, range=(0, 256))
            start = 2 * channels + channel * HISTOGRAM_BINS
            histogram = row[start : start + HISTOGRAM_BINS]
            np.testing.assert_allclose(histogram, expected / pixels.shape[0], atol=1e-6)


@pytest.mark.parametrize(
    ("knob", "changes_labels"),
    [
        ("trainer.augment.translate=0.25", False),
        ("trainer.augment.brightness=0.3", False),
        ("trainer.augment.contrast=0.5", False),
        ("trainer.augment.mixup=0.4", True),
        ("trainer.augment.cutmix=1.0", True),
    ],
)
def test_each_augmentation_changes_the_training_batches(outputs, tiny, knob, changes_labels):
    from satsweep.pipeline import training_dataset

    off = [
        "trainer.augment.flip=false",
        "trainer.augment.rot90=false",
        "trainer.augment.translate=0",
    ]
    dataset = load_data(load_run_config(tiny))
    batches = {}
    for name, overrides in (("plain", off), ("augmented", [*off, knob])):
        cfg = load_run_config([*tiny, *overrides])
        data = training_dataset(dataset.train, 4, 48, cfg.trainer.augment, seed=0)
        batches[name] = next(iter(data))
    (plain_x, _), (x, y) = batches["plain"], batches["augmented"]
    assert x.dtype == plain_x.dtype == "uint8" and x.shape == plain_x.shape
    assert not np.array_equal(x.numpy(), plain_x.numpy())
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-5)
    soft = not np.isin(y.numpy(), (0.0, 1.0)).all()
    assert soft == changes_labels


def _symmetries_and_shifts(image: np.ndarray, pad: int) -> dict[bytes, tuple[int, int, int]]:
    """Every turn or flip of ``image`` shifted by up to ``pad`` pixels (reflected): its key."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    size = image.shape[0]
    windows = {}
    for symmetry in range(8):  # four quarter turns, each with and without a flip
        turned = np.rot90(padded, symmetry % 4)
        turned = np.fliplr(turned) if symmetry >= 4 else turned
        for row in range(2 * pad + 1):
            for column in range(2 * pad + 1):
                window = turned[row : row + size, column : column + size]
                windows.setdefault(window.tobytes(), (symmetry, row, column))
    return windows


@pytest.mark.parametrize(
    ("flip", "rot90", "symmetries"),
    [
        (True, True, set(range(8))),
        (False, True, {0, 1, 2, 3}),  # quarter turns only, never a mirror image
        (True, False, {0, 2, 4, 6}),  # left-right, up-down, both (a half turn) or neither
    ],
)
def test_each_augmented_image_is_one_symmetry_and_shift_of_its_source(
    outputs, tiny, flip, rot90, symmetries
) -> None:
    # the batch-wise gather must give exactly what per-image flips, turns and crops give
    from satsweep.pipeline import training_dataset

    knobs = [f"trainer.augment.flip={flip}", f"trainer.augment.rot90={rot90}"]
    cfg = load_run_config([*tiny, *knobs, "trainer.augment.translate=0.125"])  # 2 px at 16 px
    augment = cfg.trainer.augment
    dataset = load_data(cfg)
    known: dict[bytes, tuple[int, int, int, int]] = {}
    for label, image in zip(dataset.train.labels, dataset.train.images, strict=True):
        for key, (symmetry, row, column) in _symmetries_and_shifts(image, pad=2).items():
            known[key] = (int(label), symmetry, row, column)
    data = training_dataset(dataset.train, 4, 16, augment, seed=0, passes=3)
    seen = []
    for images, targets in data:
        for image, target in zip(images.numpy(), targets.numpy().argmax(axis=1), strict=True):
            assert image.tobytes() in known, "not a turn, flip and shift of a training image"
            label, *how = known[image.tobytes()]
            assert label == target
            seen.append(how)
    used, rows, columns = (set(values) for values in zip(*seen, strict=True))
    assert used == symmetries and rows == columns == set(range(5))


def test_a_small_training_set_is_passed_over_until_an_epoch_has_min_steps(outputs, tiny) -> None:
    from satsweep.pipeline import passes_per_epoch, steps_per_epoch, training_dataset

    cfg = load_run_config([*tiny, "trainer.augment.flip=false", "trainer.augment.rot90=false"])
    dataset = load_data(cfg)
    examples = len(dataset.train)
    passes = passes_per_epoch(examples, batch_size=16, min_steps=25)
    assert passes > 1 and steps_per_epoch(examples, 16, passes) >= 25
    assert passes_per_epoch(examples, batch_size=16, min_steps=0) == 1
    data = training_dataset(dataset.train, 4, 16, cfg.trainer.augment, seed=0, passes=passes)
    labels = np.concatenate([y.numpy().argmax(axis=1) for _, y in data])
    assert len(labels) == examples * passes
    # every image once per pass: the class counts are the training set's, times passes
    np.testing.assert_array_equal(
        np.bincount(labels, minlength=4), np.bincount(dataset.train.labels, minlength=4) * passes
    )

    # a batch larger than the set holds the set once per step: 25 steps of the whole set,
    # not 25 x 4096 / 33 passes of it (which once held 10 GB of repeats)
    huge = passes_per_epoch(examples, batch_size=4096, min_steps=25)
    assert huge == 25 and steps_per_epoch(examples, 4096, huge) == 25
    data = training_dataset(dataset.train, 4, 4096, cfg.trainer.augment, seed=0, passes=huge)
    assert [len(y) for _, y in data] == [examples] * 25


@pytest.mark.slow
def test_a_quick_trial_on_a_small_image_set_beats_the_no_learning_floor(outputs) -> None:
    # 168 training images at batch 64 are 3 steps an epoch: without the repeats a
    # 10-epoch trial predicts one class (val and test macro F1 0.10, floors 0.70 and 0.80)
    from satsweep.api import train

    result = train(
        [
            "sweep=quick",
            "data.classes=[Airport,Bridge,Church,Farmland]",
            "data.max_per_class=60",
            "tracking.error_analysis=false",
            "tracking.log_model=false",
        ]
    )
    # val and test hold 36 images each, and CPUs differ in the last digits of a fit
    # (on an AMD EPYC this trial scores test 0.83 against a floor of 0.80, on an Intel
    # Xeon over 0.03 more): the margin is asked of both splits pooled, not of one alone
    metrics = result.metrics
    learnt = (metrics["final_val_f1_macro"] + metrics["test_f1_macro"]) / 2
    floor = (metrics["floor_val_f1_macro"] + metrics["floor_test_f1_macro"]) / 2
    assert learnt > floor + 0.03, metrics
    assert metrics["final_val_f1_macro"] > metrics["floor_val_f1_macro"], metrics
    assert metrics["test_f1_macro"] > metrics["floor_test_f1_macro"], metrics


def test_recomputed_statistics_are_the_mean_of_whole_batches_statistics() -> None:
    from satsweep.batchnorm import Recomputer, snapshot

    inputs = keras.Input((4, 4, 3))
    norm = keras.layers.BatchNormalization(momentum=0.9)
    model = keras.Model(inputs, norm(inputs))
    images = np.random.default_rng(0).normal(3.0, 2.0, (20, 4, 4, 3)).astype("float32")
    restore = snapshot(model)
    Recomputer(images, batch_size=8)(model)
    batches = images[:16].reshape(2, 8 * 4 * 4, 3)  # the last, partial batch is left out
    np.testing.assert_allclose(norm.moving_mean.numpy(), batches.mean(axis=1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), batches.var(axis=1).mean(0), rtol=1e-4)
    assert norm.momentum == 0.9  # the layer's own momentum is back
    restore()
    np.testing.assert_array_equal(norm.moving_mean.numpy(), np.zeros(3))


@pytest.mark.slow
def test_precise_batchnorm_changes_the_epoch_curves_and_not_the_model(outputs, tiny) -> None:
    # validation reads recomputed statistics; training, the final scores and the
    # saved model keep the moving averages
    from satsweep.api import train

    runs = [
        train([*tiny, f"trainer.precise_bn_images={images}", "tracking.error_analysis=false"])
        for images in (0, 64)
    ]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    assert runs[0].history["val_loss"] != runs[1].history["val_loss"]
    for name in ("final_val_f1_macro", "test_f1_macro", "test_loss"):
        assert runs[0].metrics[name] == runs[1].metrics[name], name
