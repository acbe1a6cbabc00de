"""Commands started at the same instant on a fresh store: each one exits 0.

MLflow migrates a fresh database's schema on first use and Optuna creates its
tables; two processes doing that at once used to kill one of them.
"""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import start_satsweep


def _all_exit_zero(processes: list[subprocess.Popen[str]]) -> None:
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "Traceback" not in output, output


@pytest.mark.faults
def test_three_trains_at_once_on_a_fresh_sqlite_store(outputs, tiny) -> None:
    command = ["train", *tiny, "tracking.log_model=false", "tracking.error_analysis=false"]
    _all_exit_zero([start_satsweep(*command) for _ in range(3)])
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("satsweep").experiment_id
    assert len(client.search_runs([experiment])) == 3


@pytest.mark.faults
@pytest.mark.postgres
def test_three_workers_at_once_on_fresh_postgres_stores(outputs, tiny, postgres_databases) -> None:
    tracking, storage = postgres_databases(), postgres_databases()
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    command = [
        "worker",
        "sweep=smoke",
        *data_and_trainer,
        "trainer.epochs=1",
        "sweep.n_trials=3",
        "storage=postgres",
        f"storage.url={storage}",
        f"tracking.uri={tracking}",
        "tracking.log_model=false",
    ]
    _all_exit_zero([start_satsweep(*command) for _ in range(3)])
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    trials = [r for r in runs if r.data.tags.get("satsweep.role") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
