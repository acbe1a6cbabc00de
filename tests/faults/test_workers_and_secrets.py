"""A worker killed mid-trial loses nothing; a killed launcher takes its workers with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import (
    journal_study,
    run_satsweep,
    running_after_one_complete,
    start_satsweep,
    wait_for_trials,
    wait_until,
    with_test_hooks,
    worker_pid,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
@pytest.mark.faults
def test_sigkilled_worker_loses_no_trial(outputs, sweep_args, tmp_path, monkeypatch) -> None:
    # a test hook holds a worker's second trial after one epoch: the kill lands inside it
    held = tmp_path / "held-fit.pid"
    monkeypatch.setenv("PYTHONPATH", with_test_hooks())
    monkeypatch.setenv("SATSWEEP_TEST_HOLD_SECOND_FIT", str(held))
    args = [*sweep_args, "sweep.n_trials=6", "sweep.pruner.name=none", "--workers", "2"]
    sweep = start_satsweep("sweep", *args)
    wait_until(
        lambda: sweep.poll() is not None or (held.exists() and held.read_text()),
        "a worker to hold its second trial after one epoch",
    )
    assert sweep.poll() is None, sweep.communicate()[0][-3000:]
    victim = int(held.read_text())
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


def _first_trial_or_its_retry(trial) -> bool:
    return trial.number == 0 or trial.system_attrs.get("failed_trial") == 0


@pytest.mark.slow
@pytest.mark.faults
def test_a_trial_that_kills_its_worker_is_retried_max_retry_times(
    outputs, sweep_args, tmp_path, monkeypatch
) -> None:
    # a test hook holds every worker about to train trial 0 or its retry: each is
    # SIGKILLed there, inside the trial, every time
    held = tmp_path / "held"
    held.mkdir()
    monkeypatch.setenv("PYTHONPATH", with_test_hooks())
    monkeypatch.setenv("SATSWEEP_TEST_HOLD_TRIAL_ZERO", str(held))
    args = [
        *sweep_args,
        "sweep.n_trials=2",
        "sweep.pruner.name=none",
        "storage.failed_trial_max_retry=1",
    ]
    sweep = start_satsweep("sweep", *args)
    killed: list[str] = []
    for _ in range(2):  # the trial, then its one retry
        wait_until(
            lambda: sweep.poll() is not None or len(_held_pids(held)) > len(killed),
            f"a worker to hold trial 0 or its retry ({len(killed)} killed so far)",
        )
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        name, pid = next((n, p) for n, p in _held_pids(held).items() if n not in killed)
        os.kill(pid, signal.SIGKILL)
        killed.append(name)
    output = sweep.communicate(timeout=600)[0]
    assert sweep.returncode == 0, output  # killed workers were replaced; the sweep finished
    assert len(_held_pids(held)) == 2, output  # no second retry was started
    study = journal_study(outputs)
    doomed = [t for t in study.trials if _first_trial_or_its_retry(t)]
    assert len(doomed) == 2, output  # the trial, then one retry
    assert all(t.state == TrialState.FAIL for t in doomed)
    assert sum(t.state in FINISHED for t in study.trials) == 2


def _held_pids(folder: Path) -> dict[str, int]:
    """The trials held by the hook so far, with the pid of the worker holding each."""
    pids = {}
    for marker in folder.glob("trial-*.pid"):
        text = marker.read_text()
        if text:  # written just after the file was created
            pids[marker.name] = int(text)
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()  # a zombie has exited
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.mark.slow
@pytest.mark.faults
def test_a_sigkilled_launcher_takes_its_workers_and_the_rerun_closes_the_sweep(
    outputs, sweep_args
) -> None:
    args = [*sweep_args, "sweep.pruner.name=none"]
    sweep = start_satsweep("sweep", *args)
    trials = wait_for_trials(outputs, sweep, running_after_one_complete)
    worker = worker_pid(next(t for t in trials if t.state == TrialState.RUNNING))
    sweep.kill()  # SIGKILL: the launcher cannot clean up
    sweep.wait()
    # the worker sees its launcher die and stops on its own
    wait_until(lambda: _gone(worker), "the worker to stop once its launcher died", 120)
    rerun = run_satsweep("sweep", *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parents = [r for r in runs if r.data.tags.get("satsweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert all(r.info.status != "RUNNING" for r in runs)
