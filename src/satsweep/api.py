"""satsweep from Python: the CLI's commands as functions, for notebooks and scripts.

Each function runs the code its command runs (``satsweep train`` calls
:func:`train`, and so on), so a notebook's run is the run the shell would have
made. They return result objects instead of printing; the CLI prints them, and
a notebook renders them (a leaderboard DataFrame, metric tables, run links).

A user error raises :class:`~satsweep.errors.UserError` with the one-line
message the CLI prints after ``satsweep: error:``.

Heavy libraries are imported inside the functions: ``import satsweep`` stays
instant, and TensorFlow is loaded once, quietly, by the first call that trains.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from satsweep.errors import UserError
from satsweep.quiet import load_tensorflow, quiet_libraries, quiet_tensorflow
from satsweep.redact import redact

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from satsweep.exploration import EdaResult
    from satsweep.reproduction import Verdict
    from satsweep.schema import RunConfig
    from satsweep.search.job import SweepJob
    from satsweep.search.ledger import Noise
    from satsweep.search.next_round import NextRound
    from satsweep.training import TrainResult

Overrides = Sequence[str]


@contextmanager
def _user_errors() -> Iterator[None]:
    """User errors leave with the CLI's message (secrets masked) and no chained cause."""
    try:
        yield
    except UserError as error:
        masked = copy.copy(error)  # of the same kind: the CLI adds what a kind calls for
        masked.args = (redact(str(error)),)
        raise masked.with_traceback(None) from None


def _override_list(overrides: object) -> list[str]:
    """``overrides`` as a list of ``key=value`` strings, or a one-line error saying how.

    A plain string would otherwise be read one character at a time.
    """
    example = "['trainer.epochs=1', 'model=cnn']"
    if isinstance(overrides, str):
        raise UserError(f"overrides are a list of strings, not one string: pass [{overrides!r}]")
    if isinstance(overrides, dict):
        raise UserError(
            "overrides are a list of key=value strings, not a dict: pass "
            "[f'{key}={value}' for key, value in overrides.items()]"
        )
    if not isinstance(overrides, Sequence) or not all(isinstance(o, str) for o in overrides):
        raise UserError(
            f"overrides are a list of key=value strings, e.g. {example}: got {overrides!r:.80}"
        )
    return list(overrides)


def _prepare(trains_here: bool) -> None:
    quiet_libraries()
    quiet_tensorflow(trains_here)
    if trains_here:
        load_tensorflow()


def compose(overrides: Overrides = ()) -> RunConfig:
    """The validated config of one run, composed by Hydra from ``conf/`` and ``overrides``."""
    from satsweep.config import load_run_config

    with _user_errors():
        return load_run_config(_override_list(overrides))


def train(config: RunConfig | Overrides = (), *, from_run: str | None = None) -> TrainResult:
    """Train, evaluate and log one run to MLflow, as ``satsweep train`` does.

    ``config`` is a composed config or a list of overrides. With ``from_run``, the
    logged run's config is the base and the overrides change it (``--from-run``).
    """
    from satsweep.schema import RunConfig

    with _user_errors():
        if isinstance(config, RunConfig) and from_run:
            raise UserError("from_run takes overrides, not a composed config")
        # validated before TensorFlow loads
        cfg = config if isinstance(config, RunConfig) else compose(config)
        _prepare(trains_here=True)
        if from_run and not isinstance(config, RunConfig):
            from satsweep.reproduction import train_from_run

            return train_from_run(from_run, _override_list(config))
        from satsweep import training

        return training.train(cfg)


def eda(overrides: Overrides = ()) -> EdaResult:
    """The dataset report (balance, samples, channels, duplicates, leakage), logged to MLflow."""
    with _user_errors():
        compose(overrides)
        _prepare(trains_here=True)
        from satsweep.exploration import run_eda

        return run_eda(_override_list(overrides))


def reproduce(
    run_id: str,
    overrides: Overrides = (),
    *,
    allow_data_change: bool = False,
    tolerance: float = 0.0,
) -> Verdict:
    """Re-run a logged run from its own config; the verdict compares every final metric."""
    with _user_errors():
        _prepare(trains_here=True)
        from satsweep.reproduction import reproduce as reproduce_run

        return reproduce_run(run_id, _override_list(overrides), allow_data_change, tolerance)


def run_of_study(
    study: str, overrides: Overrides = (), trial: int | None = None, final: bool = False
) -> str:
    """The MLflow run of a sweep's final model (``final``), trial ``trial``, or best trial.

    ``overrides`` say where the study is (``storage=...``), as for the sweep.
    """
    with _user_errors():
        from satsweep.config import load_environment
        from satsweep.search.ledger import run_of_study as find_run
        from satsweep.search.storage import open_storage

        storage = load_environment(_override_list(overrides)).storage
        return find_run(open_storage(storage), storage.url, study, trial, final)


@dataclass(frozen=True)
class SweepResult:
    """One sweep invocation: its leaderboard, its best trial and its final model."""

    study_name: str
    objective: str  # the first objective, as written in the sweep file
    exit_code: int  # what ``satsweep sweep`` would exit with: 0 when the budget was reached
    leaderboard: pd.DataFrame  # trials best first, then the final fit and the floor
    link: str  # the sweep's runs table in the MLflow UI
    job: SweepJob

    @property
    def study(self) -> optuna.Study:
        """The Optuna study, loaded from its storage (for Optuna's own plots)."""
        from satsweep.search.ledger import load_study
        from satsweep.search.storage import open_storage

        storage = self.job.base.storage
        return load_study(open_storage(storage), self.study_name, storage.url)

    @property
    def noise(self) -> Noise | None:
        """The best trial under other seeds, and the band within which trials tie."""
        from satsweep.search.ledger import Noise

        return Noise.of(self.study)

    @property
    def lessons(self) -> str:
        """What mattered, which way, and what is noise, in Markdown (the parent's lessons.md)."""
        from satsweep.search.lessons import previous_round, sweep_lessons
        from satsweep.search.storage import open_storage

        previous = self.job.settings.previous
        storage = open_storage(self.job.base.storage)
        before = previous_round(storage, previous, self.objective)
        return sweep_lessons(self.study, self.objective, self.noise, before)

    def _row(self, trial: str) -> dict[str, Any]:
        rows = self.leaderboard[self.leaderboard["trial"].astype(str) == trial]
        return rows.iloc[0].to_dict() if not rows.empty else {}

    @property
    def best(self) -> dict[str, Any]:
        """The best complete trial's leaderboard row ({} if none completed)."""
        complete = self.leaderboard[self.leaderboard["state"] == "complete"]
        return complete.iloc[0].to_dict() if not complete.empty else {}

    @property
    def final(self) -> dict[str, Any]:
        """The final fit's row: the best config retrained, the sweep's answer ({} if none)."""
        from satsweep.search.record import FINAL_ROW

        return self._row(FINAL_ROW)

    @property
    def floor(self) -> dict[str, Any]:
        """The trials' no-learning floor: what a trial must beat to have learnt anything."""
        from satsweep.search.record import FLOOR_ROW

        return self._row(FLOOR_ROW)

    @property
    def final_floor(self) -> dict[str, Any]:
        """The no-learning floor of the final model's own split, the one to hold it against."""
        from satsweep.search.record import FINAL_FLOOR_ROW

        return self._row(FINAL_FLOOR_ROW)

    def _repr_html_(self) -> str:
        return (
            f'<p>sweep <b>{self.study_name}</b>: <a href="{self.link}">its runs in MLflow</a> '
            f"(exit code {self.exit_code})</p>" + self.leaderboard.to_html(index=False, na_rep="-")
        )


def sweep(overrides: Overrides = (), *, workers: int | None = None) -> SweepResult:
    """Run a sweep (``sweep=NAME`` plus overrides) to its budget, as ``satsweep sweep`` does.

    Trials run in worker processes, ``workers`` of them (the sweep file's
    ``sweep.workers`` when None), while this process shows the progress.
    """
    with _user_errors():
        from satsweep.search.job import prepare_job
        from satsweep.search.settings import check_worker_count

        _prepare(trains_here=False)
        job = prepare_job(_override_list(overrides))
        count = job.settings.workers if workers is None else workers
        try:
            check_worker_count(job.settings.backend, count)
        except ValueError as error:
            raise UserError(str(error)) from error
        from satsweep.search.crew import Crew

        crew = Crew.start(job, count)  # its workers import TensorFlow while we load the rest
        try:
            from satsweep.console import Progress
            from satsweep.data import load_data
            from satsweep.search.launcher import launch

            dataset = load_data(job.base)  # a missing dataset fails before any trial runs
        except BaseException:
            crew.dismiss()
            raise
        outcome = launch(job, dataset, crew, Progress)
        return SweepResult(
            job.settings.study_name,
            job.settings.objectives[0],
            outcome.code,
            outcome.leaderboard,
            outcome.link,
            job,
        )


def next_round(
    study_name: str, overrides: Overrides = (), *, out: str | Path | None = None
) -> NextRound:
    """Write the next round of ``study_name`` as a sweep file, as ``satsweep next`` does.

    The file goes to ``sweeps/<study>_r2.yaml`` unless ``out`` says where; ``overrides``
    say where the study and its outputs are. The result shows the file and the command
    that runs it; a file written elsewhere runs with ``hydra.searchpath`` naming the
    folder above its ``sweep/`` folder.
    """
    with _user_errors():
        from satsweep.search.next_round import write_next_round

        return write_next_round(study_name, _override_list(overrides), Path(out) if out else None)


def artifact(run_id: str, path: str, overrides: Overrides = ()) -> Any:
    """A run's artifact, ready to show: an image for ``.png``, a DataFrame for ``.csv``,
    the parsed object for ``.json``, text otherwise. ``overrides`` say where the store is."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    cfg = compose(overrides)
    with _user_errors(), tempfile.TemporaryDirectory() as folder:
        if not isinstance(path, str) or not path.strip("/"):
            raise UserError(
                f"artifact() needs the path of one file in run {run_id}, e.g. "
                f"'confusion_matrix.csv', not {path!r}"
            )
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=path,
                    dst_path=folder,
                    tracking_uri=cfg.tracking.uri,
                )
            )
        except (MlflowException, OSError) as error:
            raise UserError(f"run {run_id} has no artifact {path!r}: {error}") from error
        if local.is_dir():
            names = ", ".join(sorted(p.name for p in local.iterdir())[:8])
            raise UserError(
                f"{path!r} of run {run_id} is a folder, not a file: ask for one of its files "
                f"({names})"
            )
        return _read_artifact(local, path)


def run_metrics(run_id: str, overrides: Overrides = ()) -> dict[str, float]:
    """A run's metrics, each at its last value (``test_f1_macro``, ``final_val_threshold``...).

    ``overrides`` say where the store is, as for :func:`artifact`.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    cfg = compose(overrides)
    with _user_errors():
        try:
            return dict(MlflowClient(cfg.tracking.uri).get_run(run_id).data.metrics)
        except MlflowException as error:
            raise UserError(f"no run {run_id!r} in {cfg.tracking.uri}: {error.message}") from error


def _read_artifact(local: Path, path: str) -> Any:
    """An artifact file by its kind; a file that is not what its name says is a user error."""
    import pandas as pd
    from PIL import Image

    try:
        if local.suffix == ".png":
            with Image.open(local) as image:
                return image.copy()
        if local.suffix == ".csv":
            return pd.read_csv(local)
        if local.suffix == ".json":
            return json.loads(local.read_text())
        if local.suffix == ".npy":
            import numpy as np

            return np.load(local, allow_pickle=False)
        return local.read_text()
    except (UnicodeDecodeError, ValueError, OSError) as error:
        raise UserError(
            f"artifact {path!r} cannot be read as {local.suffix or 'text'} ({error}): "
            "download it with mlflow.artifacts.download_artifacts to read it yourself"
        ) from error
