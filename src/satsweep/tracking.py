"""Everything MLflow: experiments, runs, params, metrics, artifacts and models.

Runs are addressed by id through one :class:`mlflow.MlflowClient` rather than
through MLflow's "active run" stack, so a sweep can hold its parent run and a
trial's child run at once, in any process.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import yaml
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis

from satsweep.schema import TrackingConfig

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole (one param each)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """One MLflow store, with the operations satsweep needs on it."""

    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg
        # The fluent API (used only to log models) reads the process-wide URI.
        mlflow.set_tracking_uri(cfg.uri)
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # mlflow resets it on import
        self.client = MlflowClient(tracking_uri=cfg.uri)

    def experiment_id(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = (
            f"{Path(self.cfg.artifact_root).resolve().as_uri()}/{name}"
            if (self.cfg.artifact_root)
            else None
        )
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Another worker created it between our lookup and our create.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def create_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(key, _param_value(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if _finite(v)]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def log_yaml(self, run_id: str, tree: Mapping[str, Any], artifact_file: str) -> None:
        text = yaml.safe_dump(dict(tree), sort_keys=False)
        self.client.log_text(run_id, text, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_bytes(self, run_id: str, content: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(artifact_file).name
            path.write_bytes(content)
            parent = Path(artifact_file).parent.as_posix()
            self.client.log_artifact(run_id, str(path), None if parent == "." else parent)

    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_dir)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        try:
            self.client.log_figure(run_id, figure, artifact_file)
        finally:
            plt.close(figure)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        dataset = MetaDataset(
            source=LocalArtifactDatasetSource(source), name=name, digest=digest[:36]
        )
        entity = dataset._to_mlflow_entity()
        context = InputTag(key="mlflow.data.context", value="training")
        self.client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[context])])

    def log_keras_model(self, run_id: str, model: keras.Model) -> None:
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            mlflow.keras.log_model(
                model,
                name="model",
                pip_requirements=_model_requirements(),
            )

    def download_text(self, run_id: str, artifact_path: str) -> str:
        with tempfile.TemporaryDirectory() as folder:
            local = self.client.download_artifacts(run_id, artifact_path, folder)
            return Path(local).read_text()

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.from_string(status)))


def _param_value(value: Any) -> str:
    return str(value)[:6000]


def _finite(value: float) -> bool:
    return value is not None and bool(np.isfinite(value))


def _model_requirements() -> list[str]:
    """Pinned requirements, given up front so MLflow does not load the model to infer them."""
    return [f"keras=={version('keras')}", f"tensorflow-cpu=={version('tensorflow-cpu')}"]
