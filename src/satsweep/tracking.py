"""Everything MLflow: experiments, runs, params, metrics, artifacts and models.

Runs are addressed by id through one :class:`mlflow.MlflowClient` rather than
through MLflow's "active run" stack, so a sweep can hold its parent run and a
trial's child run at once, in any process.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import mlflow
import numpy as np
import pandas as pd
import requests
import yaml
from matplotlib.figure import Figure
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import InvalidUrlException, MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.time import get_current_time_millis
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from satsweep.errors import UserError
from satsweep.figures import figure_png
from satsweep.locks import store_lock
from satsweep.provenance import package_versions
from satsweep.redact import redact
from satsweep.schema import TrackingConfig
from satsweep.spool import OFFLINE_PREFIX, Spool, Write, new_offline_id

PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the description the MLflow UI shows, in Markdown
# MLflow 3 opens experiments on its GenAI views unless told they hold model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAMS_PER_BATCH = 100
TRANSIENT_MARKERS = (
    "API request to",
    "Connection refused",
    "Max retries",
    "database is locked",
    "Failed to establish",
    "timed out",
    "Temporary failure",
    "Bad Gateway",
    "Service Unavailable",
)
if TYPE_CHECKING:
    import keras

ENV_URI = "MLFLOW_TRACKING_URI"  # MLflow's own variable; tracking.uri reads it too
LOG = logging.getLogger(__name__)
TAG_PREFIX = "satsweep."  # every tag satsweep sets, so the UI can filter on them
T = TypeVar("T")


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


class TrackingUnavailable(RuntimeError):
    """The MLflow store could not be reached, even after retries."""


def is_transient(error: BaseException) -> bool:
    """A connection problem worth retrying, as opposed to a bad request."""
    if isinstance(error, requests.exceptions.RequestException | OperationalError | ConnectionError):
        return True
    return isinstance(error, MlflowException) and any(m in str(error) for m in TRANSIENT_MARKERS)


def with_retries(call: Callable[[], T], delays: Sequence[float]) -> T:
    """``call()``, retried after each of ``delays`` on transient errors, or TrackingUnavailable."""
    for delay in (*delays, None):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if delay is None:
                raise TrackingUnavailable(redact(f"{type(error).__name__}: {error}")) from error
            LOG.debug("MLflow call failed (%s); retrying in %.1fs", error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# MLflow 3's stores: its server, and the databases it tracks into directly.
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql")


def _check_scheme(uri: str) -> None:
    """A store satsweep cannot use is a wrong setting, not an outage to start a server for."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme == "file" or not scheme:
        raise UserError(
            f"tracking.uri={redact(uri)} is MLflow's file store, which MLflow 3 keeps in "
            "maintenance mode and satsweep does not use: give sqlite:///PATH/mlflow.db "
            "(tracking=local) or an MLflow server's http://HOST:PORT (tracking=server)"
        )
    if scheme not in TRACKING_SCHEMES:
        raise UserError(
            f"tracking.uri={redact(uri)} has the scheme {scheme!r}, which MLflow cannot track "
            f"to: use one of {', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///outputs/mlflow.db)"
        )


class Tracker:
    """One MLflow store, with the operations satsweep needs on it.

    With a ``spool`` folder, writes that fail after retries are kept on disk
    (see :mod:`satsweep.spool`) so that training goes on; ``satsweep sync``
    uploads them later. Without one, they raise.
    """

    def __init__(self, cfg: TrackingConfig, spool: Path | None = None) -> None:
        _check_scheme(cfg.uri)
        self.cfg = cfg
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # mlflow resets it on import
        self.client = self._connect()
        self.spool = Spool(spool) if spool is not None else None
        self.offline_runs: set[str] = set()
        self._experiments: dict[str, str] = {}

    def _connect(self) -> MlflowClient:
        """The client; on a fresh database store, MLflow creates the schema here.

        That runs under a lock: MLflow's migrations fail when two processes run
        them at once, as when several workers start together.
        """
        try:
            with store_lock(self.cfg.uri, "mlflow-schema"):
                return MlflowClient(tracking_uri=self.cfg.uri)
        except (MlflowException, SQLAlchemyError, OSError) as error:
            raise self._unreachable(" ".join(str(error).split())[:300]) from error

    def _unreachable(self, why: object) -> UserError:
        return UserError(
            f"cannot reach the MLflow tracking store {redact(self.cfg.uri)} ({why}): "
            "start it (make server / make ui) or fix tracking.uri"
        )

    def remember_experiment(self, name: str, experiment_id: str) -> None:
        """Known without asking the store: a worker that attaches while it is down."""
        self._experiments[name] = experiment_id

    def check_reachable(self) -> None:
        """One line and exit code 2 when the store is down at the start of a command."""
        try:
            with_retries(lambda: self.client.search_experiments(max_results=1), delays=(0.5,))
        except TrackingUnavailable as error:
            raise self._unreachable(error) from error
        except InvalidUrlException as error:  # e.g. a '/' in the password, not %-encoded
            raise UserError(
                f"tracking.uri={self.cfg.uri} is not a valid URL: percent-encode what is "
                "special in its user name or password (/ as %2F, @ as %40, : as %3A)"
            ) from error

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (two processes may race to create it)."""
        if name not in self._experiments:
            self._experiments[name] = with_retries(
                lambda: self._get_or_create(name), self.cfg.retry_seconds
            )
        return self._experiments[name]

    def _get_or_create(self, name: str) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = (
            f"{Path(self.cfg.artifact_root).resolve().as_uri()}/{name}"
            if self.cfg.artifact_root
            else None
        )
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags=EXPERIMENT_KIND
            )
        except MlflowException:
            # Another worker created it between our lookup and our create.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def set_experiment_tags(self, experiment_id: str, tags: Mapping[str, str]) -> None:
        """The experiment's description and saved view; skipped with a warning while offline.

        Runs' writes are spooled while the store is down; these are not, as the
        next sweep on the experiment writes them again.
        """
        try:
            for key, value in tags.items():
                with_retries(
                    partial(self.client.set_experiment_tag, experiment_id, key, value),
                    self.cfg.retry_seconds,
                )
        except TrackingUnavailable as error:
            LOG.warning("MLflow store unreachable (%s): experiment tags not updated", error)

    def create_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """A new run, or an offline one in the spool while the store is unreachable."""
        all_tags = {**tags, **({PARENT_TAG: parent_run_id} if parent_run_id else {})}
        write = Write(
            "create_run", "", {"experiment_id": experiment_id, "name": name, "tags": all_tags}
        )
        if parent_run_id in self.offline_runs or (parent_run_id or "").startswith(OFFLINE_PREFIX):
            return self._go_offline(write, None)
        try:
            return with_retries(lambda: apply(self, write) or "", self.cfg.retry_seconds)
        except TrackingUnavailable as error:
            return self._go_offline(write, error)

    def _write(self, write: Write) -> None:
        if write.run_id in self.offline_runs:
            self._spool(write)
            return
        try:
            with_retries(lambda: apply(self, write), self.cfg.retry_seconds)
        except TrackingUnavailable as error:
            self._go_offline(write, error)
        except OSError as error:  # a local artifact store: a full disk, a path under a file
            raise UserError(
                f"cannot write to the MLflow artifact store ({error.strerror or error}: "
                f"{error.filename}): free space, or point tracking.artifact_root at a folder "
                "you can write"
            ) from error

    def _go_offline(self, write: Write, error: TrackingUnavailable | None) -> str:
        if self.spool is None:
            raise error or TrackingUnavailable("the parent run is offline")
        if write.op == "create_run":
            write.run_id = new_offline_id()
        if write.run_id not in self.offline_runs:
            LOG.warning(
                "MLflow store unreachable%s: keeping run %s in the spool %s; "
                "run `satsweep sync` once the store is back",
                f" ({error})" if error else "",
                write.run_id,
                self.spool.folder,
            )
        self.offline_runs.add(write.run_id)
        self._spool(write)
        return write.run_id

    def _spool(self, write: Write) -> None:
        assert self.spool is not None
        self.spool.record(write)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in batches (MLflow limits a batch), secrets redacted."""
        values = {key: _param_value(value) for key, value in params.items()}
        self._write(Write("log_params", run_id, {"params": values}))

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        step: int,
        timestamp_ms: int | None = None,
    ) -> None:
        """Finite values only. A fixed ``timestamp_ms`` makes a repeated write a no-op."""
        finite = {k: float(v) for k, v in metrics.items() if _finite(v)}
        stamp = timestamp_ms if timestamp_ms is not None else get_current_time_millis()
        if finite:
            self._write(
                Write("log_metrics", run_id, {"metrics": finite, "step": step, "timestamp": stamp})
            )

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a run; spooled while the store is unreachable."""
        self._write(Write("set_tags", run_id, {"tags": {k: str(v) for k, v in tags.items()}}))

    def log_yaml(self, run_id: str, tree: Mapping[str, Any], artifact_file: str) -> None:
        """Log a nested dict as a YAML artifact."""
        self.log_text(run_id, yaml.safe_dump(dict(tree), sort_keys=False), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Log text as an artifact."""
        self.log_bytes(run_id, text.encode(), artifact_file)

    def log_bytes(self, run_id: str, content: bytes, artifact_file: str) -> None:
        """Log bytes as an artifact; spooled while the store is unreachable."""
        self._write(Write("log_artifact", run_id, {"artifact_file": artifact_file}, content))

    def log_table(self, run_id: str, table: pd.DataFrame, artifact_file: str) -> None:
        """A table the MLflow UI shows as one (its artifact view and evaluation tab)."""
        blob = table.to_json(orient="split", index=False).encode()
        self._write(Write("log_table", run_id, {"artifact_file": artifact_file}, blob))

    def log_figure(self, run_id: str, figure: Figure, artifact_file: str) -> None:
        """Log a matplotlib figure as a PNG artifact."""
        self.log_bytes(run_id, figure_png(figure, dpi=100), artifact_file)

    def log_directory(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Log every file of a folder under ``artifact_path``."""
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            self.log_bytes(run_id, path.read_bytes(), f"{artifact_path}/{relative}")

    def log_dataset(self, run_id: str, name: str, digest: str, source: str) -> None:
        """Record the run's dataset (name, digest, source) in MLflow's dataset panel."""
        self._write(
            Write("log_dataset", run_id, {"name": name, "digest": digest[:36], "source": source})
        )

    def log_keras_model(self, run_id: str, model: keras.Model, name: str, step: int) -> None:
        """The model, named ``name``, carrying the run's metrics logged at ``step``."""
        args = {"name": logged_model_name(name), "step": step}
        self._write(Write("log_model", run_id, args, model=model))

    def download_text(self, run_id: str, artifact_path: str) -> str:
        """A run's text artifact, read back (reproduce reads the logged config this way)."""
        return self.download_bytes(run_id, artifact_path).decode()

    def download_bytes(self, run_id: str, artifact_path: str) -> bytes:
        """A run's artifact file, read back."""
        with tempfile.TemporaryDirectory() as folder:
            local = self.client.download_artifacts(run_id, artifact_path, folder)
            return Path(local).read_bytes()

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run with ``status``, so nothing is left RUNNING."""
        self._write(Write("end_run", run_id, {"status": status}))


def apply(tracker: Tracker, write: Write) -> str | None:
    """Perform one write against the store; returns the new run id for ``create_run``."""
    client, args, run_id = tracker.client, write.args, write.run_id
    if write.op == "create_run":
        run = client.create_run(args["experiment_id"], run_name=args["name"], tags=args["tags"])
        return run.info.run_id
    if write.op == "log_params":
        items = [Param(k, v) for k, v in args["params"].items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
    elif write.op == "log_metrics":
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, v, args["timestamp"], args["step"]) for k, v in args["metrics"].items()
            ],
        )
    elif write.op == "set_tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in args["tags"].items()])
    elif write.op == "log_table":
        table = pd.read_json(io.BytesIO(write.blob or b"{}"), orient="split")
        client.log_table(run_id, table, args["artifact_file"])
    elif write.op == "log_artifact":
        _log_blob(client, run_id, write.blob or b"", args["artifact_file"])
    elif write.op == "log_dataset":
        dataset = MetaDataset(  # type: ignore[abstract]
            LocalArtifactDatasetSource(args["source"]), name=args["name"], digest=args["digest"]
        )
        context = InputTag(key="mlflow.data.context", value="training")
        inputs = [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]
        try:
            client.log_inputs(run_id, datasets=inputs)
        except MlflowException as error:
            if "UNIQUE constraint" not in str(error) and "duplicate key" not in str(error):
                raise
            # two workers inserted the same dataset at once: it exists now, link to it
            client.log_inputs(run_id, datasets=inputs)
    elif write.op == "log_model":
        with (
            _fluent_uri(tracker.cfg.uri),
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None),
        ):
            mlflow.keras.log_model(
                write.model,
                name=args.get("name", "model"),
                step=args.get("step", 0),
                pip_requirements=_model_requirements(),
            )
    elif write.op == "end_run":
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.from_string(args["status"])))
    else:
        raise ValueError(f"unknown tracking write {write.op!r}")
    return None


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (used only to log models) at ``uri`` for one call.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the
    environment, which ``tracking.uri`` reads: left there, the next config this
    process composes (another outputs folder, in a notebook) would log to this store.
    """
    before = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_URI, None)
        else:
            os.environ[ENV_URI] = before


def logged_model_name(name: str) -> str:
    """``name`` as MLflow accepts for a logged model: none of / : . % " ' or spaces."""
    return re.sub(r"[/:.%\"'\s]+", "-", name).strip("-") or "model"


def _log_blob(client: MlflowClient, run_id: str, content: bytes, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(artifact_file).name
        path.write_bytes(content)
        parent = Path(artifact_file).parent.as_posix()
        client.log_artifact(run_id, str(path), None if parent == "." else parent)


def _param_value(value: Any) -> str:
    return str(value)[:6000]


def _finite(value: float) -> bool:
    return value is not None and bool(np.isfinite(value))


def _model_requirements() -> list[str]:
    """Pinned requirements, given up front so MLflow does not load the model to infer them.

    TensorFlow is whichever build is installed: ``tensorflow-cpu`` by default,
    ``tensorflow`` after ``make setup GPU=1``.
    """
    versions = package_versions()
    build = next(name for name in ("tensorflow-cpu", "tensorflow") if name in versions)
    return [f"keras=={versions['keras']}", f"{build}=={versions[build]}"]
