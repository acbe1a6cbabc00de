"""More kinds of user error, each one line and exit 2, run in this process (no child start-up)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from satsweep.cli import run

SMALL = ["data.image_size=16", "data.classes=[Beach,Port]", "trainer.epochs=1"]

CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    ("empty outputs variable", {"SATSWEEP_OUTPUTS": ""}, ["train"], "SATSWEEP_OUTPUTS is set but"),
    ("blank tracking URI", {"MLFLOW_TRACKING_URI": " "}, ["train"], "unset MLFLOW_TRACKING_URI"),
    ("empty data variable", {"SATSWEEP_DATA_DIR": ""}, ["sweep", "sweep=smoke"], "SATSWEEP_DATA"),
    (
        "a batch larger than the training split",
        {},
        ["train", *SMALL, "data.max_per_class=10", "trainer.batch_size=64"],
        "trainer.batch_size=64 is larger than the training split (14 images)",
    ),
    (
        "a log range with a step",
        {},
        ["sweep", "sweep=smoke", "model.filters=tag(log, range(8, 33, 8))"],
        "choice(8, 16, 24, 32)",
    ),
]


@pytest.mark.faults
@pytest.mark.parametrize(("case", "env", "args", "named"), CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line(outputs, monkeypatch, capsys, case, env, args, named) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert run(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("satsweep: error: "), lines
    assert named in lines[0], lines[0]
    if (outputs / "mlflow.db").exists():  # no run was started, so none is left RUNNING
        client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments)


def _study_with_one_trial(outputs) -> None:
    import optuna

    outputs.mkdir(parents=True)
    backend = optuna.storages.journal.JournalFileBackend(str(outputs / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(backend))
    study.set_user_attr("satsweep_objectives", ["val_f1_macro"])
    study.add_trial(optuna.trial.create_trial(value=0.5))


@pytest.mark.faults
@pytest.mark.parametrize("where", ["a folder", "under a file", "unwritable"])
def test_compare_csv_that_cannot_be_written_is_one_line(outputs, capsys, where) -> None:
    _study_with_one_trial(outputs)
    (outputs / "a-file").write_text("")
    (outputs / "locked").mkdir(mode=0o500)
    target = {
        "a folder": outputs,
        "under a file": outputs / "a-file" / "board.csv",
        "unwritable": outputs / "locked" / "board.csv",
    }[where]
    if where == "unwritable" and os.geteuid() == 0:  # root writes anywhere: a read-only /proc
        target = Path("/proc/board.csv")
    assert run(["compare", "s", "--csv", str(target)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"cannot write the leaderboard to --csv {target}" in error
