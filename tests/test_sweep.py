"""Real small sweeps: Optuna journal storage, worker processes, a real MLflow store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.pruners import NopPruner
from optuna.trial import TrialState

from satsweep.benchmarks.pruners import judge, recorded_curves
from satsweep.search.gate import StartGate
from tests.conftest import (
    FIGURE_ARTIFACTS,
    TRIAL_ARTIFACTS,
    journal_study,
    run_satsweep,
    start_satsweep,
    wait_until,
    with_test_hooks,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _study(outputs: Path, name: str = "smoke") -> optuna.Study:
    return journal_study(outputs, name)


def _runs(outputs: Path, experiment: str = "smoke"):
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("satsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("satsweep.role") == "trial"]
    return client, parents, children


@pytest.mark.slow
def test_conditional_parameters_never_reach_other_choices(outputs, sweep_args) -> None:
    result = run_satsweep(
        "sweep", *sweep_args, "sweep.n_trials=5", "sweep.sampler.seed=3", "tracking.log_model=true"
    )
    assert result.returncode == 0, result.stderr
    study = _study(outputs)
    _, _, children = _runs(outputs)
    params = {int(r.data.tags["satsweep.trial"]): r.data.params for r in children}
    chosen = {t.params["optimizer"] for t in study.trials}
    assert chosen == {"adam", "sgd"}  # the seed gives both choices
    for trial in study.trials:
        logged = params[trial.number]
        if trial.params["optimizer"] == "adam":
            assert "optimizer.momentum" not in trial.params
            assert "optimizer.momentum" not in logged and "optimizer.nesterov" not in logged
        else:
            assert logged["optimizer.momentum"] == str(trial.params["optimizer.momentum"])
    # one worker: trials finish in number order; only those level with the best so far
    # log their model, and only the best has figures, drawn from its logged test
    # predictions when the sweep ended (sweep.trial_artifacts=leading)
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    trial_runs = _runs(outputs)[2]
    run_ids = {r.data.tags["satsweep.trial"]: r.info.run_id for r in trial_runs}
    experiment_ids = list({r.info.experiment_id for r in trial_runs})
    modelled = {m.source_run_id for m in client.search_logged_models(experiment_ids)}
    best_so_far = -1.0
    leaders = 0
    for trial in sorted(study.trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE:
            continue
        run_id = run_ids[str(trial.number)]
        figures = {a.path for a in client.list_artifacts(run_id, "error_analysis")}
        top = {a.path for a in client.list_artifacts(run_id)}
        leads = trial.value >= best_so_far
        leaders += leads
        best = trial.number == study.best_trial.number
        assert ("error_analysis/misclassified.png" in figures) == best, (trial.number, figures)
        assert ("confusion_matrix.png" in top) == best, (trial.number, top)
        assert (run_id in modelled) == leads, trial.number
        assert "error_analysis/confused_pairs.csv" in figures  # the tables stay
        assert {"confusion_matrix.csv", "per_class_report.csv", "test_probabilities.npy"} <= top
        # the predictions the figures are drawn from are those the run was scored on
        predicted = np.load(client.download_artifacts(run_id, "test_probabilities.npy"))
        confusion = pd.read_csv(
            client.download_artifacts(run_id, "confusion_matrix.csv"), index_col=0
        ).to_numpy()
        counts = np.bincount(predicted.argmax(axis=1), minlength=confusion.shape[1])
        np.testing.assert_array_equal(counts, confusion.sum(axis=0))
        best_so_far = max(best_so_far, trial.value)
    complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert 0 < leaders < complete, leaders
    # the pruning study reads the complete trials' curves back from these records
    curves = recorded_curves(str(outputs), "smoke", "val_f1_macro")
    assert len(curves) == complete
    for curve in curves:
        assert len(curve.values) == 3  # the smoke sweep's epochs, one value each
        assert all(0.0 <= v <= 1.0 for v in (*curve.values, curve.final, curve.test))
    assert judge(curves, NopPruner, trials=complete, orders=2, seed=0).cost == pytest.approx(1.0)
    # the overhead benchmark sizes its epochs on the trials a seeded sweep will draw:
    # its in-memory draw gives this sweep's trials (TPE's first 4 are random)
    from satsweep.benchmarks.sweeps import drawn_trials
    from satsweep.search.job import prepare_job

    job = prepare_job([*sweep_args, "sweep.n_trials=5", "sweep.sampler.seed=3"])
    ran = [job.space.suggest(t) for t in sorted(study.trials, key=lambda t: t.number)]
    assert drawn_trials(job, 4) == ran[:4]


@pytest.mark.slow
def test_pruner_stops_bad_trials_early(outputs, sweep_args) -> None:
    result = run_satsweep(
        "sweep",
        *sweep_args,
        "trainer.epochs=4",
        "sweep.objectives=[val_loss]",
        "sweep.directions=[minimize]",
        "sweep.pruner.name=percentile",
        "+sweep.pruner.options.percentile=10.0",
        "sweep.pruner.options.n_startup_trials=1",
        "sweep.pruner.options.n_warmup_steps=0",
    )
    assert result.returncode == 0, result.stderr
    pruned = [t for t in _study(outputs).trials if t.state == TrialState.PRUNED]
    assert pruned, "a 10th-percentile pruner keeps only trials that lead at every epoch"
    client, _, children = _runs(outputs)
    by_number = {int(r.data.tags["satsweep.trial"]): r for r in children}
    for trial in pruned:
        run = by_number[trial.number]
        assert run.data.tags["satsweep.trial_state"] == "pruned"
        assert run.info.status == "KILLED"
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) < 4


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_exactly_n_trials(
    outputs, sweep_args, tmp_path, monkeypatch
) -> None:
    # a test hook holds the worker's second trial after its first epoch until the stop
    # arrives: the interrupt lands inside that trial every time
    held = tmp_path / "held-fit.pid"
    args = [*sweep_args, "sweep.pruner.name=none"]
    monkeypatch.setenv("PYTHONPATH", with_test_hooks())
    monkeypatch.setenv("SATSWEEP_TEST_HOLD_SECOND_FIT", str(held))
    process = start_satsweep("sweep", *args)
    wait_until(
        lambda: process.poll() is not None or (held.exists() and held.read_text()),
        "the worker to hold its second trial after one epoch",
    )
    assert process.poll() is None, process.communicate()[0][-3000:]
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 130, output
    interrupted = _study(outputs).trials
    assert sum(t.state in FINISHED for t in interrupted) < 4
    client, _, children = _runs(outputs)
    assert all(r.info.status != "RUNNING" for r in children), "the stop closed every run"
    # a worker whose last writes failed leaves its run open: the resume must close it
    stranded = next(r for r in children if r.data.tags["satsweep.trial_state"] == "failed")
    client.update_run(stranded.info.run_id, status="RUNNING")

    monkeypatch.delenv("SATSWEEP_TEST_HOLD_SECOND_FIT")
    resumed = run_satsweep("sweep", *args)
    assert resumed.returncode == 0, resumed.stderr
    trials = _study(outputs).trials
    assert sum(t.state in FINISHED for t in trials) == 4
    _, parents, children = _runs(outputs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    left_running = [r.data.tags for r in children if r.info.status == "RUNNING"]
    assert not left_running, left_running
    assert client.get_run(stranded.info.run_id).info.status == "FAILED"
    assert sum(r.data.tags["satsweep.trial_state"] == "complete" for r in children) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sweep_file", "named"),
    [
        ("sweep:\n  params:\n    optimizer.lrr: interval(0.001, 0.01)\n", "optimizer.lrr"),
        ("sweep:\n  params:\n    optimizer.lr: interval(0.001, 0.01\n", "optimizer.lr"),
        ("sweep:\n  sampler:\n    name: annealing\n", "annealing"),
        ("sweep:\n  objectives: [val_magic]\n  pruner:\n    name: none\n", "val_magic"),
        ("sweep:\n  n_trials: 0\n", "n_trials"),
    ],
)
def test_bad_sweep_file_fails_before_training(outputs, tmp_path, sweep_file, named) -> None:
    folder = tmp_path / "extra"
    (folder / "sweep").mkdir(parents=True)
    header = "# @package _global_\ndefaults:\n  - smoke\n  - _self_\n"
    (folder / "sweep" / "broken.yaml").write_text(header + sweep_file)
    result = run_satsweep("sweep", "sweep=broken", f"hydra.searchpath=[file://{folder}]")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweeps/broken.yaml" in lines[0] and named in lines[0], lines
    assert not (outputs / "optuna.journal").exists()


@pytest.mark.slow
def test_final_fit_is_the_sweeps_answer(outputs, sweep_args, tmp_path) -> None:
    args = [a for a in sweep_args if a != "sweep.final_fit.enabled=false"]
    args += ["sweep.noise.repeats=2", "sweep.previous=smoke_r0"]  # a next round, say
    # every trial completes: with two workers, whether the median pruner stops trial 3
    # depends on how many trials finished before its last epoch, i.e. on the machine's
    # load; with 4 startup trials of 4 it never prunes, yet still records every epoch
    args += ["sweep.pruner.options.n_startup_trials=4"]
    # two workers that re-execute themselves after two runs, keeping pid and log: six
    # runs (4 trials, 2 repeats) between two workers give one at least three
    trace = tmp_path / "compositions.tsv"
    result = run_satsweep(
        "sweep",
        *args,
        "sweep.trials_per_process=2",
        "--workers",
        "2",
        env={"PYTHONPATH": with_test_hooks(), "SATSWEEP_TEST_COMPOSE_TRACE": str(trace)},
    )
    assert result.returncode == 0, result.stderr + result.stdout
    study = _study(outputs)
    _check_two_workers_shared_one_study(outputs, study, trace, result.stdout)
    record = study.user_attrs["satsweep_final_fit"]
    assert record["trial"] == study.best_trial.number
    _check_the_noise_band(outputs, study, " ".join(result.stdout.split()))
    # the workers ran the repeats once the search was over, not the final fit's process
    workers = {t.user_attrs["satsweep_worker"] for t in study.trials}
    repeats = {k: v for k, v in study.user_attrs.items() if k.startswith("satsweep_noise_repeat")}
    assert len(repeats) == 2 and {r["owner"] for r in repeats.values()} <= workers, repeats
    final_log = (outputs / "sweeps" / "smoke" / "final.log").read_text()
    assert "epoch 4/4" in final_log and "epoch 3/3" not in final_log  # no 3-epoch repeat
    # the answer names the trial it retrained and its parameters, beside its own split's floor
    said = " ".join(result.stdout.split())  # rich may wrap long lines
    fidelity = "at 16 px for 4 epochs"  # the final fit's own: smoke's trials run 3
    final_line = f"final model (of trial {record['trial']} {fidelity}, retrained): test_f1_macro="
    assert final_line in said, result.stdout
    for key, value in study.best_trial.params.items():
        assert (
            f"{key}={value:.4g}" in said if isinstance(value, float) else f"{key}={value}" in said
        )
    own_floor = record["metrics"]["floor_test_f1_macro"]
    assert f"no-learning floor of the final model's split: test_f1_macro={own_floor:.4g}" in said
    assert "no-learning floor of the trials' split: test_f1_macro=" in said
    run_id = record["run_id"]
    for command in (
        "mlflow ui --backend-store-uri sqlite:",
        "satsweep compare smoke",
        "satsweep next smoke",
        f"satsweep reproduce {run_id}",
        f"satsweep train --from-run {run_id}",
    ):
        assert command in said, command
    client, parents, children = _runs(outputs)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    finals = client.search_runs([experiment], "tags.`satsweep.role` = 'final'")
    assert len(finals) == 1 and finals[0].info.run_id == record["run_id"]
    final, parent = finals[0], parents[0]
    assert final.info.status == "FINISHED"
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert final.data.params["trainer.epochs"] == "4"  # smoke's final_fit overrides
    best_run = next(
        c for c in children if c.info.run_id == parent.data.tags["satsweep.best_run_id"]
    )
    for key, value in study.best_trial.params.items():
        if key != "optimizer":
            assert final.data.params[key] == best_run.data.params[key] == str(value), key
    assert parent.data.tags["satsweep.final_run_id"] == final.info.run_id
    parent_metrics = parent.data.metrics
    assert parent_metrics["final_test_f1_macro"] == final.data.metrics["test_f1_macro"]
    assert 0.0 <= parent_metrics["floor_test_f1_macro"] <= 1.0
    assert final.data.metrics["floor_test_f1_macro"] >= 0.0  # the final's own split's floor

    csv = tmp_path / "board.csv"
    assert run_satsweep("compare", "smoke", "--csv", str(csv)).returncode == 0
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("trial,state,val_f1_macro")
    rows = [line.split(",")[:2] for line in lines[1:]]
    assert rows[0] == ["final", f"of trial {record['trial']} at 16 px for 4 epochs"], rows
    assert rows[1] == ["final floor", "final's split"] and rows[-1] == ["floor", "trials' split"]
    assert len(rows) == 7  # the final model and its floor, 4 trials, their floor

    # long phases show where they are: the final fit's epochs in the launcher's progress,
    # every epoch in the log of a run (here the reproduce of the final model)
    assert "final fit epoch 4/4" in result.stderr, result.stderr[-2000:]
    again = run_satsweep("reproduce", "--study", "smoke", "--final")
    assert again.returncode == 0 and "reproduced: max |difference| 0" in again.stdout, again.stderr
    assert re.search(r"epoch 4/4: loss [0-9.]+, val_loss [0-9.]+, val_f1_macro", again.stdout)
    rerun = run_satsweep("sweep", *args)  # the study is done: no new fit
    assert rerun.returncode == 0, rerun.stderr
    assert len(client.search_runs([experiment], "tags.`satsweep.role` = 'final'")) == 1

    # the best trial, trained by one of two workers that split the cores, reproduces bit
    # for bit: its run records the threads it trained on, and reproduce trains on as many
    best = run_satsweep("reproduce", "--study", "smoke", "--best")
    assert best.returncode == 0 and "reproduced: max |difference| 0" in best.stdout, best.stderr
    trial_run = client.get_run(parent.data.tags["satsweep.best_run_id"])
    assert trial_run.data.params["trainer.threads"] == str(max(1, (os.cpu_count() or 1) // 2))
    again_runs = client.search_runs(
        [experiment], f"tags.`satsweep.reproduces` = '{trial_run.info.run_id}'"
    )
    assert [r.data.params["trainer.threads"] for r in again_runs] == [
        trial_run.data.params["trainer.threads"]
    ]


def _check_the_noise_band(outputs: Path, study: optuna.Study, said: str) -> None:
    """The band comes from real repeats of the best trial, on its split, with other seeds."""
    noise = study.user_attrs["satsweep_noise"]
    best = study.best_trial
    assert noise["trial"] == best.number and noise["seeds"] == [43, 44]  # seed 42 + 1, + 2
    assert noise["values"][0] == best.value and len(noise["values"]) == 3
    client, parents, _ = _runs(outputs)
    repeats = sorted(  # two workers may start them in either order
        client.search_runs([parents[0].info.experiment_id], "tags.`satsweep.role` = 'noise'"),
        key=lambda run: int(run.data.params["seed"]),
    )
    assert [r.data.metrics["final_val_f1_macro"] for r in repeats] == noise["values"][1:]
    assert [r.data.params["seed"] for r in repeats] == ["43", "44"]
    assert {r.data.params["data.split.seed"] for r in repeats} == {"42"}  # the trials' split
    sd = float(np.std(noise["values"], ddof=1))
    # the band is never finer than the validation images can resolve
    images = best.user_attrs["satsweep_val_images"]
    assert noise["val_images"] == images > 0
    # what its score is comparable with: the lessons compare rounds only at one fidelity
    assert re.fullmatch(
        r"16 px, \d+ epochs, \d+ training images", best.user_attrs["satsweep_fidelity"]
    )
    mean = float(np.mean(noise["values"]))
    band = 2 * max(sd, float(np.sqrt(mean * (1 - mean) / images)))
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.metrics["noise_sd_val_f1_macro"] == pytest.approx(sd)
    assert parent.data.tags["satsweep.previous_study"] == "smoke_r0"  # the round it follows
    assert parent.data.params["sweep.params.optimizer.lr"]  # the searched space, as params
    assert parent.data.metrics["noise_band_val_f1_macro"] == pytest.approx(band)
    assert "**Seed noise:** trial" in parent.data.tags["mlflow.note.content"]
    note = parent.data.tags["mlflow.note.content"]  # what mattered, is it real, what next
    assert "## What mattered" in note and "`satsweep next smoke`" in note
    # the UI folds a long description: its first lines answer the three questions
    first = note.splitlines()[2:5]
    assert [line.split("**")[1] for line in first] == [
        "Is it real?",
        "What mattered?",
        "What next?",
    ]
    assert "seed-to-seed sd" in first[0] and f"under {band:.4f} are noise" in first[0]
    assert "What mattered (4 trials, " in said  # printed after the leaderboard
    lessons = client.download_artifacts(parent.info.run_id, "lessons.md", str(outputs))
    assert Path(lessons).read_text().startswith("## What mattered")
    assert f"seed noise: trial {best.number} trained again with seeds 43, 44" in said
    tied = [t.number for t in study.trials if t.values and abs(t.values[0] - best.value) <= band]
    (outputs / "board").mkdir()
    board = pd.read_csv(
        client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(outputs / "board"))
    )
    marked = board[board["tied"] == "tied"]["trial"].astype(int).tolist()
    assert sorted(marked) == sorted(tied) and best.number in marked


def _check_two_workers_shared_one_study(
    outputs: Path, study: optuna.Study, trace: Path, said: str
) -> None:
    """Two workers shared one study and one parent run, each trial once, every artifact."""
    logs = [p.read_text() for p in (outputs / "sweeps" / "smoke").glob("worker-*.log")]
    assert sum(log.count("re-executing the worker") for log in logs) >= 1
    assert "best trial:" in said
    # the sweep's job is composed once, by the launcher; workers (re-executed ones
    # too) load it and compose only each run's own config (the final fit's process is a
    # worker too): 4 trials, 2 seed repeats, 1 final fit, nothing else
    compositions = [line.split("\t") for line in trace.read_text().splitlines()]
    jobs = [(pid, command) for pid, command, kind in compositions if kind == "job"]
    assert len(jobs) == 1 and jobs[0][1] == "sweep", compositions
    by_workers = [kind for _, command, kind in compositions if command == "worker"]
    assert by_workers == ["trial"] * 7, compositions

    numbers = [t.number for t in study.trials if t.state in FINISHED]
    assert sorted(numbers) == [0, 1, 2, 3]
    workers = {t.user_attrs["satsweep_worker"] for t in study.trials}
    assert len(workers) == 2  # both processes ran trials
    points = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(points) == len(study.trials)  # workers, and re-executed ones, never repeat

    client, parents, children = _runs(outputs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    child_numbers = sorted(int(r.data.tags["satsweep.trial"]) for r in children)
    assert child_numbers == [0, 1, 2, 3]  # each trial once in MLflow too
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert child.data.tags["satsweep.backend"] == "optuna"
        number = int(child.data.tags["satsweep.trial"])
        assert child.info.run_name.startswith(f"smoke-trial-{number:03d} ")  # and its fate
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts - FIGURE_ARTIFACTS == TRIAL_ARTIFACTS
    # the same param keys on every trial of one optimizer, so the UI compares them
    by_optimizer: dict[str, set[frozenset[str]]] = {}
    for child in children:
        by_optimizer.setdefault(child.data.params["optimizer.name"], set()).add(
            frozenset(child.data.params)
        )
    assert all(len(keys) == 1 for keys in by_optimizer.values())

    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {
        "leaderboard.csv",
        "sweep.yaml",
        "base_config.yaml",
        "plots",
        "eda",
        "best_trial",
    } <= artifacts
    assert "eda/eda_report.html" in {a.path for a in client.list_artifacts(parent, "eda")}
    best_analysis = {a.path for a in client.list_artifacts(parent, "best_trial/error_analysis")}
    assert "best_trial/error_analysis/misclassified.png" in best_analysis
    best = {a.path for a in client.list_artifacts(parent, "best_trial")}
    assert {"best_trial/confusion_matrix.png", "best_trial/config.yaml"} <= best
    plots = {a.path for a in client.list_artifacts(parent, "plots")}
    assert {
        "plots/interactive.html",
        "plots/optimization_history.png",
        "plots/intermediate_values.png",
    } <= plots
    assert parents[0].data.tags["satsweep.best_run_id"] in {c.info.run_id for c in children}


@pytest.mark.parametrize("opened", [True, False])
def test_start_gate_lets_waiting_workers_on_or_ends_them(opened: bool) -> None:
    """Processes holding the gate go on once it opens; closed unopened, each exits in one line."""
    script = (
        "import os; from satsweep.search.gate import GATE_ENV, wait_at_gate; "
        "wait_at_gate(); print('through', os.environ.get(GATE_ENV))"
    )
    gate = StartGate()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env={**os.environ, **gate.environment()},
            pass_fds=(gate.read_fd,),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    if opened:
        gate.open(len(children))
    else:
        gate.close()
    for child in children:
        out, err = child.communicate(timeout=120)
        if opened:
            assert child.returncode == 0 and out.strip() == "through None", err
        else:
            assert child.returncode != 0 and "could not set the sweep up" in err, err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["storage=postgres", "storage.url=postgresql://postgres@127.0.0.1:9/x"], "127.0.0.1:9"),
        (["data.path=/nowhere/aid"], "/nowhere/aid"),
    ],
)
def test_sweep_that_cannot_set_up_ends_its_waiting_workers(
    outputs, sweep_args, overrides, named
) -> None:
    """Workers start once the job is composed; a bad store or dataset still ends all in one line."""
    result = run_satsweep("sweep", *sweep_args, *overrides)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], lines
    assert (outputs / "sweeps" / "smoke" / "worker-0.log").exists()  # it had started
    assert _processes_started_for(outputs) == []  # and the launcher ended it


def _processes_started_for(outputs: Path) -> list[int]:
    """Live processes whose environment names this test's outputs folder (its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(outputs).encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_figures_that_cannot_be_drawn_leave_the_sweeps_record_whole(
    outputs, sweep_args, monkeypatch, caplog
) -> None:
    from satsweep.search import record
    from satsweep.search.job import prepare_job

    job = prepare_job(sweep_args)
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    job.space.suggest(trial)
    study.tell(trial, 0.5)

    def unreadable(*args: object) -> bool:
        raise ValueError("cannot load file test_probabilities.npy")

    monkeypatch.setattr(record, "draw_missing_figures", unreadable)
    record._draw_figures(job, study.trials[0], None, "run-id", None)  # type: ignore[arg-type]
    assert "the best trial's figures were not drawn: cannot load file" in caplog.text


@pytest.mark.slow
def test_a_study_refuses_a_sweep_on_other_data(outputs, sweep_args) -> None:
    args = [*sweep_args, "sweep.n_trials=1", "trainer.epochs=1"]
    first = run_satsweep("sweep", *args)
    assert first.returncode == 0, first.stderr
    before = [(t.number, t.state, t.values) for t in _study(outputs).trials]
    _, parents, children = _runs(outputs)
    runs_before = {r.info.run_id: r.info.status for r in parents + children}

    # the same study name on three of the four classes: other data, other scores
    other = [a for a in args if not a.startswith("data.classes=")]
    second = run_satsweep("sweep", *other, "data.classes=[Beach,Forest,Port]", "sweep.n_trials=2")
    assert second.returncode == 2, second.stderr + second.stdout
    assert "Traceback" not in second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweep.study_name=" in lines[0], lines
    assert "classes: 4 -> 3" in lines[0], lines
    # a worker joining by hand with that data is refused alike
    joined = run_satsweep("worker", *other, "data.classes=[Beach,Forest,Port]", "sweep.n_trials=2")
    assert joined.returncode == 2 and "classes: 4 -> 3" in joined.stderr, joined.stderr[-2000:]
    assert [(t.number, t.state, t.values) for t in _study(outputs).trials] == before
    _, parents, children = _runs(outputs)
    assert {r.info.run_id: r.info.status for r in parents + children} == runs_before


@pytest.mark.slow
def test_a_sweep_whose_trials_all_fail_says_why_and_fails(outputs, sweep_args) -> None:
    # every learning rate diverges: each trial fails on its first non-finite loss. Only
    # the rate is searched, with Adam (SGD at such rates can kill every ReLU instead,
    # and train on at a finite loss). Each trial runs in a fresh process: the count of
    # failures in a row must survive a worker's re-execution, or it never stops.
    only_lr = ["~sweep.params", "+sweep.params={}", "~sweep.conditional", "+sweep.conditional={}"]
    args = [*sweep_args, "sweep.n_trials=1", "sweep.max_failures=2", *only_lr]
    args += ["sweep.trials_per_process=1"]
    result = run_satsweep("sweep", *args, "optimizer.lr=choice(1e12, 1e13)")
    assert result.returncode == 1, result.stderr[-3000:]
    said = " ".join((result.stdout + result.stderr).split())  # the log wraps long lines
    assert "no trial completed, so the sweep has no answer: trial 1 failed" in said
    assert "loss" in said and "finite" in said
    _, parents, children = _runs(outputs)
    assert [r.info.status for r in parents] == ["FAILED"]
    assert {r.info.status for r in children} == {"FAILED"}


@pytest.mark.slow
@pytest.mark.faults
def test_the_final_fit_trains_beside_the_repeats_and_outlives_a_worker_killed_in_one(
    outputs, sweep_args, tmp_path, monkeypatch
) -> None:
    # the final fit starts when the last trial finishes and trains while the workers run
    # the seed repeats; a worker that dies in its repeat leaves it to the final fit's
    # process, which runs it once its own fit is done: the sweep keeps its answer
    held = tmp_path / "held-repeat.pid"
    monkeypatch.setenv("PYTHONPATH", with_test_hooks())
    monkeypatch.setenv("SATSWEEP_TEST_HOLD_REPEAT", str(held))
    args = [a for a in sweep_args if a != "sweep.final_fit.enabled=false"]
    sweep = start_satsweep(
        "sweep", *args, "sweep.n_trials=2", "sweep.noise.repeats=2", "--workers", "2"
    )
    wait_until(
        lambda: sweep.poll() is not None or (held.exists() and held.read_text()),
        "a worker to start the first seed repeat",
    )
    victim = int(held.read_text())

    def final_fit_trained() -> bool:
        progress = _study(outputs).user_attrs.get("satsweep_final_fit_progress") or {}
        return sweep.poll() is not None or progress.get("epoch") == progress.get("epochs", -1)

    wait_until(final_fit_trained, "the final fit's last epoch while a repeat is held")
    assert sweep.poll() is None, "the sweep ended while a worker held its repeat"
    assert "satsweep_noise" not in _study(outputs).user_attrs  # its band waits for the repeats
    os.kill(victim, signal.SIGKILL)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, output[-3000:]
    assert f"exited with {-signal.SIGKILL}" in output  # the launcher says what happened
    study = _study(outputs)
    noise = study.user_attrs["satsweep_noise"]
    assert len(noise["values"]) == 3 and study.user_attrs.get("satsweep_final_fit"), output[-3000:]
    client, _, _ = _runs(outputs)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    repeats = client.search_runs([experiment], "tags.`satsweep.role` = 'noise'")
    assert sorted(r.data.params["seed"] for r in repeats) == ["43", "44"]
    assert len(client.search_runs([experiment], "tags.`satsweep.role` = 'final'")) == 1
