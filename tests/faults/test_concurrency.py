"""Commands started at the same instant on a fresh store: each one exits 0.

MLflow migrates a fresh database's schema on first use and Optuna creates its
tables; two processes doing that at once used to kill one of them.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import start_satsweep

pytestmark = pytest.mark.fresh_store  # the outputs folder starts empty: no migrated store


def _all_exit_zero(processes: list[subprocess.Popen[str]]) -> None:
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert "Traceback" not in output, output


@pytest.mark.slow
@pytest.mark.faults
def test_three_trains_at_once_on_a_fresh_sqlite_store(outputs, tiny) -> None:
    command = ["train", *tiny, "tracking.log_model=false", "tracking.error_analysis=false"]
    _all_exit_zero([start_satsweep(*command) for _ in range(3)])
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("satsweep").experiment_id
    assert len(client.search_runs([experiment])) == 3


@pytest.mark.slow
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
    # no launcher: the last worker closed the sweep, with its floor, final fit and record
    (parent,) = [r for r in runs if r.data.tags.get("satsweep.role") == "sweep"]
    assert parent.info.status == "FINISHED" and "floor_test_f1_macro" in parent.data.metrics
    assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    finals = [r for r in runs if r.data.tags.get("satsweep.role") == "final"]
    assert [r.info.status for r in finals] == ["FINISHED"]


@pytest.mark.slow
@pytest.mark.faults
def test_two_launchers_of_one_study_answer_with_one_final_fit(outputs, sweep_args) -> None:
    args = [*sweep_args[:-1], "sweep.final_fit.enabled=true", "trainer.epochs=1"]
    launchers = [start_satsweep("sweep", *args, "sweep.n_trials=2") for _ in range(2)]
    said = [process.communicate(timeout=600)[0] for process in launchers]
    for process, output in zip(launchers, said, strict=True):
        assert process.returncode == 0 and "Traceback" not in output, output
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    finals = [r for r in runs if r.data.tags.get("satsweep.role") == "final"]
    assert len(finals) == 1 and finals[0].info.status == "FINISHED"
    # "final model (of trial N, retrained): scores (params; MLflow run ID)", maybe wrapped
    answers = [re.findall(r"final model \(.*?MLflow run \w+\)", " ".join(t.split())) for t in said]
    assert answers[0] == answers[1] and len(answers[0]) == 1, answers
    assert finals[0].info.run_id in answers[0][0], answers
