"""What a user sees when comparing runs: read back through MLflow's client, and the terminal.

One study gets a complete trial, a pruned one, a final fit and a failed trial, in
three invocations (resumable studies make each state deterministic). The test then
reads the experiment as the MLflow UI does.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from satsweep.console import leaderboard_table
from tests.conftest import run_satsweep

SWEEP = (
    "# @package _global_\n"
    "defaults:\n  - _base\n  - override /model: cnn\n  - override /optimizer: adam\n  - _self_\n"
    "model: {blocks: 2, filters: 8, dense_units: 16}\n"
    "sweep:\n  study_name: ui\n  pruner: {name: none}\n"
    "  final_fit: {enabled: false, overrides: [trainer.epochs=3]}\n"
    "  params:\n    model.dropout: interval(0.0, 0.2)\n"
)
MACHINE_KEYS = ("paths.", "tracking.", "storage.", "data.path", "data.download")


def _sweep(folder: Path, tiny: list[str], *overrides: str) -> tuple[int, str]:
    data_and_trainer = [o for o in tiny if not o.startswith("model.")]
    result = run_satsweep(
        "sweep",
        "sweep=ui",
        f"hydra.searchpath=[file://{folder}]",
        *data_and_trainer,
        *overrides,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout


@pytest.mark.slow
def test_a_sweep_reads_right_in_the_mlflow_ui(outputs, tiny, tmp_path, data_dir) -> None:
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "ui.yaml").write_text(SWEEP)
    folder = tmp_path / "conf"
    code, printed = _sweep(folder, tiny, "sweep.n_trials=1")  # trial 0 completes
    assert code == 0
    pruned = ["sweep.pruner.name=threshold", "+sweep.pruner.options={lower: 1.01}"]
    code, _ = _sweep(folder, tiny, "sweep.n_trials=2", *pruned, "sweep.final_fit.enabled=true")
    assert code == 0
    # trial 2 diverges; one failure in a row ends the invocation with exit code 2 (the
    # learning rate joins the search: a new fixed value would make it another study)
    diverge = "optimizer.lr=choice(1e12)"
    code, _ = _sweep(folder, tiny, "sweep.n_trials=3", diverge, "sweep.max_failures=1")
    assert code == 2

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("ui")
    all_runs = client.search_runs([experiment.experiment_id])
    roles = {r.data.tags.get("satsweep.role"): r for r in all_runs}
    parent, final = roles["sweep"], roles["final"]
    trials = {
        int(r.data.tags["satsweep.trial"]): r
        for r in all_runs
        if r.data.tags.get("satsweep.role") == "trial"
    }

    # descriptions: the experiment's and the parent run's, with the best trial as a link
    for note in (experiment.tags["mlflow.note.content"], parent.data.tags["mlflow.note.content"]):
        assert "## Sweep `ui`" in note and "maximize `val_f1_macro`" in note
        assert "1 complete, 1 pruned, 1 failed" in note
        # relative: the UI resolves them on whatever host and port serves it
        best = f"#/experiments/{experiment.experiment_id}/runs/{trials[0].info.run_id}"
        assert f"]({best}?workflowType=machine_learning)" in note
        assert "**Final model:**" in note and "http://" not in note
        assert "| `model.dropout` | `interval(0.0, 0.2)` |" in note

    # the printed link opens a saved view: sorted by the objective, swept params shown
    view = json.loads(experiment.tags["mlflow.sharedViewState.satsweep"])
    assert view["orderByKey"] == "metrics.`final_val_f1_macro`" and view["orderByAsc"] is False
    assert "params.`model.dropout`" in view["selectedColumns"]
    assert "metrics.`test_f1_macro`" in view["selectedColumns"]
    assert "runs?workflowType=machine_learning&viewStateShareKey=satsweep" in printed

    # every way into the experiment opens the model-training views, not the GenAI ones
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # the parent run carries the sweep's settings as params
    assert parent.data.params["sweep.pruner.name"] == "none"
    assert parent.data.params["sweep.sampler.name"] == "tpe"
    assert parent.data.params["sweep.params.model.dropout"] == "interval(0.0, 0.2)"
    # constants of a run are tags, not metrics the compare view would chart
    assert "steps_per_epoch" not in trials[0].data.metrics
    assert int(trials[0].data.tags["satsweep.steps_per_epoch"]) >= 1

    # the parent run charts the objective over trials: one point per complete trial
    history = client.get_metric_history(parent.info.run_id, "trial_val_f1_macro")
    assert [m.step for m in history] == [0]  # three finalizes, the point logged once
    assert history[0].value == trials[0].data.metrics["final_val_f1_macro"]

    # a trial's page describes it
    assert trials[0].data.tags["mlflow.note.content"].startswith("Trial 0 of sweep `ui`: complete")
    assert "pruned by the threshold pruner" in trials[1].data.tags["mlflow.note.content"]

    # run names say what matters
    assert re.fullmatch(r"ui-trial-000 val_f1_macro=0\.\d{4}", trials[0].info.run_name)
    assert trials[1].info.run_name == "ui-trial-001 pruned"
    assert trials[2].info.run_name == "ui-trial-002 failed"
    assert re.fullmatch(r"ui-final-of-trial-000 test_f1_macro=\d\.\d{4}", final.info.run_name)

    # only finished runs carry the final objective, so sorting on it puts them first
    assert "final_val_f1_macro" in trials[0].data.metrics
    for run in (trials[1], trials[2]):
        assert "final_val_f1_macro" not in run.data.metrics
    assert trials[1].info.status == "KILLED" and trials[2].info.status == "FAILED"
    reason = trials[1].data.tags["satsweep.pruned"]
    assert reason.startswith("pruned by the threshold pruner after epoch 1: val_f1_macro=")
    assert "short of 1.0100" in reason

    # val_f1_macro is the per-epoch curve: one point per epoch, no final point appended
    for run, epochs in ((trials[0], 2), (final, 3)):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_f1_macro")]
        assert steps == list(range(epochs)), steps

    # logged models carry the final metrics at the last step, under the run's name
    models = {m.source_run_id: m for m in client.search_logged_models([experiment.experiment_id])}
    for run, epochs in ((trials[0], 2), (final, 3)):
        model = models[run.info.run_id]
        assert model.name == run.info.run_name.split(" ")[0]
        attached = {m.key: m for m in model.metrics}
        for key in ("final_val_f1_macro", "test_f1_macro", "test_accuracy"):
            assert attached[key].step == epochs
            assert attached[key].value == run.data.metrics[key]
        assert "val_f1_macro" not in attached and "loss" not in attached

    # params define the experiment; machine paths and logging settings stay in config.yaml
    for run in all_runs:
        for key, value in run.data.params.items():
            assert not key.startswith(MACHINE_KEYS), key
            assert str(outputs) not in value and str(data_dir) not in value, (key, value)
    assert trials[0].data.params["model.dropout"]


def test_the_leaderboard_fits_the_terminal_without_splitting_numbers() -> None:
    rows = [
        {
            "trial": n,
            "state": "complete" if n % 3 else "pruned",
            "val_f1_macro": 0.1234567 * n if n % 3 else None,
            "test_f1_macro": 0.2345678,
            "epochs_run": 10.0,
            "pruned_at_epoch": None if n % 3 else 6,
            "seconds": 123.456789,
            "optimizer.lr": 0.00123456,
            "optimizer.weight_decay": 0.000456789,
            "trainer.augment.translate": 0.125,
            "trainer.label_smoothing": 0.1,
            "model.width": 32,
            "mlflow_run_id": "0123456789abcdef0123456789abcdef",
        }
        for n in range(6)
    ]
    table = pd.DataFrame(rows)
    for width in (80, 100):
        out = io.StringIO()
        console = Console(file=out, width=width, color_system=None)
        console.print(leaderboard_table(table, "sweep quick", console.width))
        lines = out.getvalue().splitlines()
        assert lines and all(len(line) <= width for line in lines), width
        body = [line for line in lines if line.startswith("│")]
        assert len(body) == len(table)  # one line per row: nothing wrapped
        assert all("0.2346" in line for line in body)  # whole numbers, never split
        assert "not shown:" in out.getvalue()  # what did not fit is named
    wide = io.StringIO()
    Console(file=wide, width=300, color_system=None).print(leaderboard_table(table, "t", 300))
    assert "not shown" not in wide.getvalue() and "translate" in wide.getvalue()
