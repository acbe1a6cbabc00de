"""A worker killed mid-trial loses nothing; a password in a storage URL leaks nowhere."""

from __future__ import annotations

import os
import signal

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import (
    WORKER,
    journal_study,
    run_satsweep,
    running_after_one_complete,
    start_satsweep,
    wait_for_trials,
    worker_pid,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.faults
def test_sigkilled_worker_loses_no_trial(outputs, sweep_args) -> None:
    args = [*sweep_args, "sweep.n_trials=6", "sweep.pruner.name=none", "--workers", "2"]
    sweep = start_satsweep("sweep", *args)
    trials = wait_for_trials(outputs, sweep, running_after_one_complete)
    victim = worker_pid(
        next(t for t in trials if t.state == TrialState.RUNNING and WORKER in t.user_attrs)
    )
    os.kill(victim, signal.SIGKILL)
    output, _ = sweep.communicate(timeout=600)
    if sweep.returncode != 0:  # the rule: re-running the same command finishes the job
        rerun = run_satsweep("sweep", *args)
        assert rerun.returncode == 0, rerun.stderr
    study = journal_study(outputs)
    finished = sorted(t.number for t in study.trials if t.state in FINISHED)
    assert len(finished) == 6, output
    killed = [
        t
        for t in study.trials
        if t.user_attrs.get("satsweep_worker", "").endswith(f":{victim}")
        and t.state == TrialState.FAIL
    ]
    assert killed, "the killed worker's trial is marked failed"

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    children = [r for r in runs if r.data.tags.get("satsweep.role") == "trial"]
    complete = sorted(
        int(r.data.tags["satsweep.trial"])
        for r in children
        if r.data.tags["satsweep.trial_state"] in ("complete", "pruned")
    )
    assert complete == finished  # each finished trial exactly once in MLflow
    assert all(r.info.status != "RUNNING" for r in runs)
    killed_runs = [r for r in children if int(r.data.tags["satsweep.trial"]) == killed[0].number]
    assert killed_runs[0].info.status == "FAILED"


@pytest.mark.faults
@pytest.mark.postgres
def test_password_in_storage_url_leaks_nowhere(outputs, tiny, postgres_url) -> None:
    password = "hunter2-Sup3rSecret"
    url = postgres_url.replace("postgres@", f"postgres:{password}@")  # trust auth accepts it
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    args = [
        "sweep=smoke",
        *data_and_trainer,
        "storage=postgres",
        f"storage.url={url}",
        "sweep.n_trials=2",
        "trainer.epochs=1",
    ]
    result = run_satsweep("sweep", *args)
    assert result.returncode == 0, result.stderr
    compared = run_satsweep("compare", "smoke", "storage=postgres", f"storage.url={url}")
    missing = run_satsweep("compare", "nope", "storage=postgres", f"storage.url={url}")
    assert compared.returncode == 0 and missing.returncode == 2
    console = "".join(r.stdout + r.stderr for r in (result, compared, missing))
    assert "***" in missing.stderr and password not in console

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert any(
        r.data.params.get("storage.url", "").endswith(
            "***@127.0.0.1:5432/" + postgres_url.rsplit("/", 1)[1]
        )
        for r in runs
    )
    for path in outputs.rglob("*"):  # the whole store: database, artifacts, worker logs
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
