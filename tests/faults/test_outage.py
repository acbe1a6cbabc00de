"""Faults a week-long sweep meets: a tracking server that goes away, NaN losses."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from satsweep.search.ledger import trial_run_id
from tests.conftest import journal_study, run_satsweep, start_satsweep, wait_for_trials
from tests.servers import MlflowServer

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
@pytest.mark.faults
def test_tracking_outage_loses_no_trial(outputs, sweep_args, tmp_path) -> None:
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "server-artifacts")
    # one short retry: the outage is certain, and each re-executed worker meets it anew
    tracking = ["tracking=server", f"tracking.uri={server.uri}", "tracking.retry_seconds=[0.1]"]
    args = [*sweep_args, *tracking, "sweep.pruner.name=none", "tracking.log_model=true"]
    # the worker re-executes itself after every trial: the fresh process spools too
    args += ["sweep.trials_per_process=1", "sweep.final_fit.enabled=true"]
    args += ["sweep.n_trials=2"]  # one before the outage, one in it (then the final fit)
    server.start()
    try:
        sweep = start_satsweep("sweep", *args)
        wait_for_trials(
            outputs, sweep, lambda trials: any(t.state == TrialState.COMPLETE for t in trials)
        )
        server.stop()  # the tracking server goes away mid-sweep
        output, _ = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, output
        assert list((outputs / "spool").glob("*.jsonl")), "nothing was spooled"

        server.start()  # back, with the same backend store
        synced = run_satsweep("sync", *tracking)
        assert synced.returncode == 0, synced.stderr
        assert not list((outputs / "spool").glob("*.jsonl"))

        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("smoke").experiment_id
        runs = {r.info.run_id: r for r in client.search_runs([experiment])}
        parents = [r for r in runs.values() if r.data.tags.get("satsweep.role") == "sweep"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        study = journal_study(outputs, "smoke")
        finished = [t for t in study.trials if t.state in FINISHED]
        assert len(finished) == 2
        for trial in finished:
            run = runs[trial_run_id(study, trial)]  # offline ids re-linked to real runs
            assert run.data.tags["satsweep.trial"] == str(trial.number)
            assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert run.info.status == "FINISHED" and "test_f1_macro" in run.data.metrics
            assert (
                len(client.get_metric_history(run.info.run_id, "val_loss")) == 3
            )  # one point per epoch
        assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        finals = [r for r in runs.values() if r.data.tags.get("satsweep.role") == "final"]
        assert [r.info.status for r in finals] == ["FINISHED"]  # the final fit spooled too
        assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.faults
def test_tracking_store_down_at_start_is_one_line(outputs, tiny) -> None:
    result = run_satsweep(
        "train", *tiny, "tracking=server", "tracking.uri=http://127.0.0.1:9"
    )  # nothing listens on port 9
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the MLflow tracking store" in lines[0], lines


@pytest.mark.slow
@pytest.mark.faults
def test_nan_trials_fail_and_the_sweep_goes_on(outputs, tiny, tmp_path) -> None:
    folder = tmp_path / "extra" / "sweep"
    folder.mkdir(parents=True)
    (folder / "diverge.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - _base\n  - override /optimizer: sgd\n  - _self_\n"
        "sweep:\n  study_name: diverge\n  n_trials: 3\n  pruner: {name: none}\n"
        "  sampler: {name: random, seed: 0}\n  max_failures: 10\n"
        "  params:\n    optimizer.lr: choice(0.003, 0.01, 0.03, 1e12)\n"
        "  final_fit: {enabled: false}\n"  # the subject is the trials
    )
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    result = run_satsweep(
        "sweep",
        "sweep=diverge",
        f"hydra.searchpath=[file://{folder.parent}]",
        *data_and_trainer,
        "tracking.log_model=false",
    )
    assert result.returncode == 0, result.stderr
    trials = journal_study(outputs, "diverge").trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert failed and all(t.params["optimizer.lr"] == 1e12 for t in failed)
    assert all("NaN or infinite" in t.user_attrs["failure"] for t in failed)
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("diverge").experiment_id])
    failed_runs = [r for r in runs if r.data.tags.get("satsweep.trial_state") == "failed"]
    assert len(failed_runs) == len(failed)
    for run in failed_runs:
        assert run.info.status == "FAILED" and "NaN" in run.data.tags["satsweep.failure"]
        assert "failure" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
@pytest.mark.faults
def test_an_artifact_store_that_cannot_be_written_fails_in_one_line_and_closes_every_run(
    outputs, sweep_args
) -> None:
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / "blocked").write_text("a file where the artifact folder should be")
    args = [*sweep_args, "sweep.n_trials=2", "trainer.epochs=1", "sweep.pruner.name=none"]
    args.append(f"tracking.artifact_root={outputs}/blocked/artifacts")
    failed = run_satsweep("sweep", *args)
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    assert "satsweep: error: cannot write to the MLflow artifact store (Not a directory" in (
        failed.stderr
    )
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment])
    left = [(r.info.run_name, r.info.status) for r in runs if r.info.status != "FAILED"]
    assert runs and not left, (left, failed.stderr[-3000:])

    (outputs / "blocked").unlink()  # the disk is fixed: the same command goes on
    resumed = run_satsweep("sweep", *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sum(t.state in FINISHED for t in journal_study(outputs).trials) == 2
    assert "RUNNING" not in {r.info.status for r in client.search_runs([experiment])}


def test_a_trial_whose_failure_cannot_be_written_still_closes_its_run(outputs, sweep_args) -> None:
    """The artifact store refused the trial's files, so it refuses the traceback too: the
    run is closed FAILED all the same (two workers under load once left five RUNNING)."""
    from satsweep.search.job import prepare_job
    from satsweep.search.objective import TrialObjective
    from satsweep.tracking import Tracker

    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / "blocked").write_text("a file where the artifact folder should be")
    job = prepare_job([*sweep_args, f"tracking.artifact_root={outputs}/blocked/artifacts"])
    tracker = Tracker(job.base.tracking)
    experiment = tracker.experiment_id("smoke")
    parent = tracker.create_run(experiment, "parent", tags={})
    run_id = tracker.create_run(experiment, "trial", tags={}, parent_run_id=parent)
    objective = TrialObjective(job, tracker, parent)
    try:
        raise OSError("the disk is full")
    except OSError as error:
        message = objective._record_failure(run_id, error, "smoke-trial-000 failed")
    assert message == "OSError: the disk is full"
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.run_name == "smoke-trial-000 failed"
