"""Shared fixtures: real AID images, a real MLflow store and Optuna storage per test.

Tests train on small subsets of the real AID images in ``$SATSWEEP_DATA_DIR``
(CI sets it to ``../shared/data``). A missing dataset fails the suite: a skipped
test would count as missing.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
TEST_HOOKS = Path(__file__).parent / "tracing"  # sitecustomize.py: hooks in child processes
WORKER = "satsweep_worker"  # the trial user attr naming the worker process
# The warnings Python's default filters hide outside ``__main__``.
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
# Tiny, fast runs: a few classes, few images, 16 px, 1-2 epochs.
# What every trial's MLflow run holds, whichever backend proposed the trial; the
# sweep's best trial also has FIGURE_ARTIFACTS (sweep.trial_artifacts=leading draws
# them for it alone, when the sweep ends; KerasTuner's trials draw their own).
TRIAL_ARTIFACTS = {
    "config.yaml",
    "confusion_matrix.csv",
    "per_class_report.csv",
    "per_class_report.json",
    "error_analysis",
    "test_probabilities.npy",
}
FIGURE_ARTIFACTS = {"confusion_matrix.png"}
TINY = [
    "data.image_size=16",
    "data.max_per_class=12",
    "data.classes=[Beach,Forest,Port,Desert]",
    "trainer=quick",
    "trainer.epochs=2",
    "trainer.batch_size=16",
    "trainer.min_steps_per_epoch=0",  # machinery tests: no repeats of the tiny set
    "model.stages=2",
    "model.width=8",
]
# A 340-byte YAML file that expands to 9**7 (4.8 million) values through its aliases.
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9) if previous else ', '.join(['1'] * 9)}]\n"
    for previous, name in zip(["", *"abcdef"], "abcdefg", strict=True)
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = Path(os.environ.get("SATSWEEP_DATA_DIR", REPO / "data")).resolve()
    if not (folder / "aid").is_dir():
        pytest.fail(f"AID not found in {folder}: set SATSWEEP_DATA_DIR (CI uses ../shared/data)")
    return folder


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache for the session: tests share decoded arrays, not stores."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store whose schema MLflow migrated, once for the session.

    A first command on a new store spends about 2 s in MLflow's migrations; tests
    that are not about that moment start from a copy of this file instead.
    """
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("migrated") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def outputs(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    shared_cache: Path,
    migrated_store: Path,
) -> Path:
    """A new outputs folder (MLflow store, Optuna journal) for this test.

    Its MLflow store is a copy of :func:`migrated_store`, unless the test is marked
    ``fresh_store`` (it is about what a first command creates): then the folder is absent.
    """
    folder = tmp_path / "outputs"
    if request.node.get_closest_marker("fresh_store") is None:
        folder.mkdir()
        shutil.copyfile(migrated_store, folder / "mlflow.db")
    monkeypatch.setenv("SATSWEEP_OUTPUTS", str(folder))
    monkeypatch.setenv("SATSWEEP_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(REPO)
    return folder


@pytest.fixture
def tiny(shared_cache: Path) -> list[str]:
    return [*TINY, f"paths.cache={shared_cache}"]


def with_test_hooks() -> str:
    """``PYTHONPATH`` for a child process that loads the hooks of tests/tracing/sitecustomize.py."""
    return os.pathsep.join([str(TEST_HOOKS), os.environ.get("PYTHONPATH", "")])


def start_satsweep(*args: str) -> subprocess.Popen[str]:
    """The real CLI in the background, its output captured (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "satsweep", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )


def wait_until(condition: Callable[[], object], what: str, timeout: float = 300) -> None:
    """Poll ``condition`` until it holds; past ``timeout``, fail naming ``what`` it awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}, in vain")
        time.sleep(0.1)


def wait_for_output(process: subprocess.Popen[str], text: str, timeout: float = 300) -> str:
    """Read a child's output until a line holds ``text`` (an event it prints), with a deadline."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:  # the process closed its output: it ended
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"never printed {text!r} within {timeout} s: {''.join(seen)[-2000:]}")


def journal_study(outputs: Path, name: str = "smoke") -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(outputs / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


def wait_for_trials(
    outputs: Path,
    process: subprocess.Popen[str],
    condition: Callable[[list[optuna.trial.FrozenTrial]], bool],
    name: str = "smoke",
    timeout: float = 300,
) -> list[optuna.trial.FrozenTrial]:
    """Poll the journal of a running sweep until ``condition(trials)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:
            trials = journal_study(outputs, name).trials
        except (KeyError, FileNotFoundError):  # the study is not created yet
            continue
        if condition(trials):
            return trials
    raise AssertionError(f"the sweep never reached the awaited state: {process.poll()=}")


def running_after_one_complete(trials: list[optuna.trial.FrozenTrial]) -> bool:
    return any(t.state == TrialState.COMPLETE for t in trials) and any(
        t.state == TrialState.RUNNING and WORKER in t.user_attrs for t in trials
    )


def worker_pid(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs[WORKER].rsplit(":", 1)[1])


def run_in_process(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *args: str
) -> tuple[int, str, str]:
    """The CLI's ``run`` in this process, where a child would add only its start-up: the
    exit code, stdout (with the log records, which the CLI's console prints there) and
    stderr, as the file descriptors saw them (the libraries' own output too)."""
    from satsweep.cli import run

    capfd.readouterr()  # what came before is not this command's
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # the CLI's own filters still come first
        try:
            code = run(list(args))
        except SystemExit as stop:  # argparse ends the process itself
            code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    out, err = capfd.readouterr()
    logged = [record.getMessage() for record in caplog.records]
    shown = [  # what a console script's stderr would show (Python hides these kinds)
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
        for w in caught
        if not issubclass(w.category, HIDDEN_WARNINGS)
    ]
    return code, "\n".join([out, *logged]), err + "".join(shown)


def run_satsweep(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process: exit codes, stderr, no shared state."""
    return subprocess.run(
        [sys.executable, "-m", "satsweep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def sweep_args(tiny: list[str]) -> list[str]:
    """The smoke sweep: 4 tiny trials of 3 epochs, models not logged, no final fit."""
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    return [
        "sweep=smoke",
        *data_and_trainer,
        "trainer.epochs=3",
        "sweep.n_trials=4",
        "tracking.log_model=false",
        "sweep.final_fit.enabled=false",
    ]


@pytest.fixture
def aid_subset(tmp_path: Path, data_dir: Path) -> Iterator[Path]:
    """A writable copy of 12 images from each of 3 AID classes."""
    root = tmp_path / "subset"
    for name in ("Beach", "Forest", "Port"):
        (root / name).mkdir(parents=True)
        for image in sorted((data_dir / "aid" / name).glob("*.jpg"))[:12]:
            shutil.copy(image, root / name / image.name)
    yield root


@pytest.fixture
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the real PostgreSQL at 127.0.0.1:5432; drops them afterwards.

    Skips only outside CI: with CI=true an unreachable server fails the test.
    """
    import uuid

    import psycopg

    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        connection = psycopg.connect(admin, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is unreachable in CI: {error}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {error}")
    created: list[str] = []

    def make() -> str:
        name = f"satsweep_test_{uuid.uuid4().hex[:10]}"
        connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    try:
        yield make
    finally:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    return postgres_databases()
