"""One training run end to end, asserted on what the real MLflow store holds."""

from __future__ import annotations

import gc
import io
import os
import re
import signal
import subprocess
import sys
import warnings
import weakref
from collections.abc import Iterator

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from satsweep.cli import run
from satsweep.runtime import settle_between_runs
from tests.conftest import REPO, run_satsweep, wait_until, with_test_hooks


def _only_run(outputs):
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("satsweep").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _artifact_text(client: MlflowClient, run_id: str, path: str, tmp_path) -> str:
    return open(client.download_artifacts(run_id, path, str(tmp_path))).read()


@pytest.mark.slow
def test_train_logs_everything(outputs, tiny, tmp_path) -> None:
    assert run(["train", *tiny]) == 0
    client, logged = _only_run(outputs)
    run_id = logged.info.run_id
    assert logged.info.status == "FINISHED"

    params = logged.data.params
    assert params["data.image_size"] == "16" and params["model.name"] == "resnet"
    assert params["optimizer.lr"] == "0.003" and params["trainer.epochs"] == "2"
    assert params["model.bn_momentum"] == "0.9" and params["trainer.label_smoothing"] == "0.1"

    for key in ("val_f1_macro", "val_accuracy", "val_loss", "loss", "accuracy", "f1_macro", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [0, 1], key
    metrics = logged.data.metrics
    for key in ("test_accuracy", "test_f1_macro", "final_val_f1_macro", "test_recall_macro"):
        assert 0.0 <= metrics[key] <= 1.0
        assert [m.step for m in client.get_metric_history(run_id, key)] == [2], key

    confusion = pd.read_csv(
        io.StringIO(_artifact_text(client, run_id, "confusion_matrix.csv", tmp_path)), index_col=0
    )
    report = pd.read_csv(
        io.StringIO(_artifact_text(client, run_id, "per_class_report.csv", tmp_path))
    )
    assert list(confusion.index) == ["Beach", "Forest", "Port", "Desert"]
    assert confusion.to_numpy().sum() == report["support"].sum() == 8  # 4 classes x 2 test

    config = yaml.safe_load(_artifact_text(client, run_id, "config.yaml", tmp_path))
    assert config["data"]["image_size"] == 16 and config["model"]["width"] == 8

    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "per_class_report.csv",
        "per_class_report.json",  # an MLflow table: the UI shows it as one
        "config.yaml",
        "test_probabilities.npy",
    } <= artifacts
    assert "per_class_report.json" in logged.data.tags["mlflow.loggedArtifacts"]
    analysis = {a.path for a in client.list_artifacts(run_id, "error_analysis")}
    assert {
        f"error_analysis/{name}"
        for name in (
            "misclassified.png",
            "confused_pairs.csv",
            "per_class_scores.png",
            "calibration.png",
            "diagnosis.md",
        )
    } <= analysis
    assert 0.0 <= metrics["test_ece"] <= 1.0
    assert logged.data.tags["satsweep.diagnosis"].startswith("diagnosis: ")
    models = client.search_logged_models([logged.info.experiment_id])
    assert len(models) == 1 and models[0].source_run_id == run_id
    loads = (  # in a user's own process: Keras and MLflow, no satsweep
        "import sys, mlflow, mlflow.keras; mlflow.set_tracking_uri(sys.argv[1]); "
        "print(mlflow.keras.load_model(sys.argv[2]).output_shape)"
    )
    store = f"sqlite:///{outputs}/mlflow.db"
    loaded = subprocess.run(
        [sys.executable, "-c", loads, store, models[0].model_uri], capture_output=True, text=True
    )
    assert loaded.returncode == 0 and "(None, 4)" in loaded.stdout, loaded.stderr[-2000:]

    tags = logged.data.tags
    assert tags["satsweep.seed"] == "42" and len(tags["satsweep.data_digest"]) == 64
    assert tags["satsweep.git_dirty"] in ("true", "false")
    for package in ("python", "keras", "optuna", "mlflow"):
        assert tags[f"satsweep.version.{package}"]
    assert tags["satsweep.version.tensorflow-cpu"].startswith("2.21")
    assert logged.inputs.dataset_inputs[0].dataset.digest == tags["satsweep.data_digest"][:36]


@pytest.mark.slow
def test_train_prints_no_tensorflow_native_notes(outputs, tiny, monkeypatch) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the suite sets one
    result = run_satsweep("train", *tiny, "tracking.log_model=false")
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    assert "NodeDef" not in printed and "oneDNN" not in printed
    assert not re.search(r"^[EWI]\d{4} ", printed, re.MULTILINE)  # absl's C++ log lines
    assert "in the MLflow UI (make ui): http://127.0.0.1:5000/#/experiments/" in printed


@pytest.mark.slow
def test_binary_run_logs_positive_class_metrics(outputs, tiny) -> None:
    overrides = [o for o in tiny if not o.startswith("data.classes")]
    overrides += [
        "+experiment=aid_port_binary",
        "data.classes=[Beach,Port,Forest]",
        "data.max_per_class=12",
        "trainer.epochs=1",
    ]
    assert run(["train", *overrides]) == 0
    client, logged = _only_run(outputs)
    metrics = logged.data.metrics
    for key in ("test_precision", "test_recall", "test_f1", "test_roc_auc", "test_pr_auc"):
        assert key in metrics, key
        assert np.isnan(metrics[key]) or 0.0 <= metrics[key] <= 1.0
    analysis = {a.path for a in client.list_artifacts(logged.info.run_id, "error_analysis")}
    assert {
        "error_analysis/pr_curve.png",
        "error_analysis/roc_curve.png",
        "error_analysis/threshold_sweep.csv",
    } <= analysis
    # the threshold is chosen on validation (never on test) and test is scored at it once
    assert 0.01 <= metrics["final_val_threshold"] <= 0.99
    assert (
        metrics["final_val_f1_at_threshold"] >= metrics["final_val_f1"] - 1e-9
    )  # 0.5 was a candidate
    for key in ("test_f1_at_threshold", "test_precision_at_threshold", "test_recall_at_threshold"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert not [key for key in metrics if "best_threshold" in key]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("optimizer", "schedule", "warmup"),
    [
        ("sgd", "onecycle", 1),
        ("rmsprop", "step", 0),
        ("adamw", "plateau", 0),
        ("adam", "constant", 1),
    ],
)
def test_every_optimizer_and_schedule_trains(outputs, tiny, optimizer, schedule, warmup) -> None:
    assert (
        run(
            [
                "train",
                *tiny,
                f"optimizer={optimizer}",
                f"optimizer.schedule.name={schedule}",
                f"optimizer.schedule.warmup_epochs={warmup}",
                "trainer.epochs=1",
                "tracking.log_model=false",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_mlp_baseline_trains(outputs, tiny) -> None:
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    assert (
        run(
            [
                "train",
                *data_and_trainer,
                "model=mlp",
                "model.hidden_units=[32]",
                "trainer.epochs=1",
                "tracking.log_model=false",
            ]
        )
        == 0
    )


@pytest.fixture
def float32_after() -> Iterator[None]:
    yield
    keras.mixed_precision.set_global_policy("float32")  # later tests build models directly


@pytest.mark.slow
def test_mixed_precision_and_xla_train_and_log(outputs, tiny, float32_after) -> None:
    knobs = ["trainer.precision=mixed_bfloat16", "trainer.jit_compile=true"]
    assert run(["train", *tiny, *knobs, "tracking.log_model=false"]) == 2  # needs nondeterminism
    knobs.append("trainer.deterministic=false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(["train", *tiny, *knobs, "tracking.log_model=false"]) == 0
    assert not [w for w in caught if "jit_compile" in str(w.message)]  # XLA was not dropped
    _, logged = _only_run(outputs)
    assert logged.data.params["trainer.precision"] == "mixed_bfloat16"
    assert logged.data.params["trainer.jit_compile"] == "True"
    assert 0.0 <= logged.data.metrics["test_f1_macro"] <= 1.0
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_settling_between_runs_frees_the_last_model_then_freezes_the_survivors() -> None:
    """Freezing before collecting would keep the last trial's model for the worker's life."""
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    last_run = weakref.ref(model)
    del model
    try:
        settle_between_runs()
        assert last_run() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_train_closes_its_run(outputs, tiny, sig, tmp_path) -> None:
    # the stop lands right after the run's link is printed (a test hook holds the
    # process there), where a train that printed before guarding its run left it RUNNING
    held = tmp_path / "held-after-link.pid"
    env = {
        **os.environ,
        "PYTHONPATH": with_test_hooks(),
        "SATSWEEP_TEST_HOLD_AFTER_LINK": str(held),
    }
    # started like a shell's background job: SIGINT ignored until satsweep handles it
    process = subprocess.Popen(
        [sys.executable, "-m", "satsweep", "train", *tiny, "trainer.epochs=200"],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    wait_until(
        lambda: process.poll() is not None or (held.exists() and held.read_text()),
        "the train to print its run's link",
    )
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("satsweep").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"], output[-3000:]
