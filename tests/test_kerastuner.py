"""The KerasTuner backend: real KerasTuner oracles, real sweeps, a real MLflow store."""

from __future__ import annotations

import random
from pathlib import Path

import keras_tuner
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from satsweep.search.job import prepare_job
from satsweep.search.kerastuner import SpaceModel, build_oracle, declare
from tests.conftest import FIGURE_ARTIFACTS, TRIAL_ARTIFACTS, journal_study, run_satsweep

CONDITIONAL = {"optimizer.momentum", "optimizer.nesterov"}  # swept only under optimizer=sgd


def _assert_conditions_hold(values: dict[str, object]) -> None:
    if values["optimizer"] == "sgd":
        assert set(values) >= CONDITIONAL
        assert 0.5 <= float(values["optimizer.momentum"]) <= 0.95
        assert isinstance(values["optimizer.nesterov"], bool)
    else:
        assert not CONDITIONAL & set(values), values


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_every_oracle_respects_conditional_parameters(outputs, tmp_path, tuner) -> None:
    job = prepare_job(["sweep=smoke", f"sweep.kerastuner.tuner={tuner}", "sweep.n_trials=30"])
    oracle = build_oracle(job.settings)
    keras_tuner.engine.base_tuner.BaseTuner(
        oracle, hypermodel=SpaceModel(job.space), directory=str(tmp_path), project_name=tuner
    )
    scores = random.Random(0)
    chosen = set()
    for _ in range(20):  # past the Bayesian oracle's random start, into its Gaussian process
        trial = oracle.create_trial("tuner0")
        values = declare(job.space, trial.hyperparameters.copy())
        _assert_conditions_hold(values)
        chosen.add(values["optimizer"])
        oracle.update_trial(trial.trial_id, {"val_f1_macro": scores.random()})
        trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
        oracle.end_trial(trial)
    assert chosen == {"adam", "sgd"}


@pytest.mark.slow
def test_hyperband_sweep_logs_trials_like_optuna_and_resumes(outputs, sweep_args) -> None:
    args = [
        *sweep_args,
        "trainer.epochs=4",
        "sweep.backend=kerastuner",
        "sweep.kerastuner.tuner=hyperband",
        "sweep.trials_per_process=4",  # the worker re-executes mid-search: KerasTuner reloads
        "sweep.n_trials=6",
    ]
    result = run_satsweep("sweep", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best trial:" in result.stdout

    study = journal_study(outputs)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags["satsweep.role"] == "sweep")
    children = {
        int(r.data.tags["satsweep.trial"]): r
        for r in runs
        if r.data.tags["satsweep.role"] == "trial"
    }
    assert sorted(children) == [0, 1, 2, 3, 4, 5]
    for trial in study.trials:
        run = children[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["satsweep.backend"] == "kerastuner"
        assert run.info.status == "FINISHED"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts - FIGURE_ARTIFACTS == TRIAL_ARTIFACTS
        _assert_conditions_hold(trial.params)
        logged = {k: v for k, v in run.data.params.items() if k in CONDITIONAL}
        assert set(logged) == (CONDITIONAL if trial.params["optimizer"] == "sgd" else set())
    # which optimizers Hyperband's later rounds pick depends on training results; that both
    # choices are proposed is test_every_oracle_respects_conditional_parameters' job

    # Hyperband's second round continues a first-round trial from its weights
    continued = [r for r in children.values() if "satsweep.kerastuner.continues_run" in r.data.tags]
    assert continued, "6 trials of 4 epochs with factor 3 reach Hyperband's second round"
    for run in continued:
        earlier = client.get_run(run.data.tags["satsweep.kerastuner.continues_run"])
        assert earlier.data.params == {
            **run.data.params,
            "trainer.epochs": earlier.data.params["trainer.epochs"],
        }
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert min(steps) == int(earlier.data.metrics["epochs_run"]) > 0
        assert run.data.metrics["epochs_run"] == 4

    resumed = run_satsweep("sweep", *args[:-1], "sweep.n_trials=7")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (Path(outputs) / "sweeps" / "smoke" / "worker-0.log").read_text()
    assert log.count("Reloading Tuner") >= 2  # KerasTuner's own state, in outputs/kerastuner
    trials = journal_study(outputs).trials
    assert len(trials) == 7
    assert len({t.user_attrs["kerastuner_trial_id"] for t in trials}) == 7

    switched = run_satsweep("sweep", *args[:-4])  # the same study, under Optuna
    assert switched.returncode == 2
    assert "searched with sweep.backend=kerastuner" in switched.stderr


@pytest.mark.slow
def test_the_quick_sweep_under_hyperband_ends_with_its_final_fit(outputs, tiny) -> None:
    data = [o for o in tiny if o.startswith(("data.", "paths."))]
    result = run_satsweep(
        "sweep",
        "sweep=quick",
        "sweep.backend=kerastuner",
        "sweep.kerastuner.tuner=hyperband",
        "sweep.workers=1",  # quick's two workers: a KerasTuner oracle runs in one
        *data,
        "trainer.epochs=2",
        "trainer.batch_size=16",  # quick's 64 is more than the 33 training images
        "trainer.min_steps_per_epoch=0",
        "sweep.n_trials=2",
        "sweep.final_fit.overrides=['trainer.epochs=2']",
        "tracking.log_model=false",
        "data.train_share=0.5",  # kept by the final fit: it is warned of, and named
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = " ".join((result.stdout + result.stderr).split())  # rich may wrap long lines
    assert "add data.train_share=1.0 to sweep.final_fit.overrides" in said, said[-3000:]
    assert "at 16 px for 2 epochs on 50% of the training images, retrained" in said
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    roles = sorted(r.data.tags["satsweep.role"] for r in runs)
    # the quick sweep measures its seed noise: the best trial again with two more seeds
    assert roles == ["final", "noise", "noise", "sweep", "trial", "trial"], roles
    assert all(r.info.status == "FINISHED" for r in runs)
