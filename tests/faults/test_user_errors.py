"""More kinds of user error, each one line and exit 2, run in this process (no child start-up)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from satsweep.cli import run
from tests.conftest import ALIAS_BOMB, REPO

CASES: list[tuple[str, dict[str, str], list[str], str]] = [
    ("empty outputs variable", {"SATSWEEP_OUTPUTS": ""}, ["train"], "SATSWEEP_OUTPUTS is set but"),
    ("blank tracking URI", {"MLFLOW_TRACKING_URI": " "}, ["train"], "unset MLFLOW_TRACKING_URI"),
    ("empty data variable", {"SATSWEEP_DATA_DIR": ""}, ["sweep", "sweep=smoke"], "SATSWEEP_DATA"),
    (
        "a log range with a step",
        {},
        ["sweep", "sweep=smoke", "model.filters=tag(log, range(8, 33, 8))"],
        "choice(8, 16, 24, 32)",
    ),
]
CASES += [  # ones that need no environment variable
    (case, {}, args, named)
    for case, args, named in [
        (
            "too few images of a class for the split",
            ["train", "data.max_per_class=3", "data.classes=[Beach,Port]"],
            "cannot split 6 images of 2 classes",
        ),
        (
            "an extreme split",
            [
                "train",
                "data.max_per_class=20",
                "data.classes=[Beach,Port]",
                "data.split.train=0.98",
                "data.split.val=0.01",
                "data.split.test=0.01",
            ],
            "less extreme data.split",
        ),
        ("a negative seed", ["train", "seed=-1"], "seed=-1"),
        (
            "a positive class that does not exist",
            ["train", "data=harvey", "data.positive_classes=[flooded]"],
            "unknown class 'flooded' in data.positive_classes: the classes are damage",
        ),
        (
            "a binary task on a set with one class",
            ["train", "data=harvey", "data.classes=[damage]"],
            "no negative examples are left",
        ),
        (
            "a target recall outside (0, 1]",
            ["train", "trainer.threshold.metric=recall", "trainer.threshold.target=1.5"],
            "trainer.threshold.target",
        ),
        ("a seed numpy refuses", ["train", "seed=99999999999999"], "seed=99999999999999"),
        (
            "a negative sampler seed",
            ["sweep", "sweep=smoke", "sweep.sampler.seed=-3"],
            "sweep.sampler.seed=-3",
        ),
        (
            "a sampler seed among its options",
            ["sweep", "sweep=smoke", "+sweep.sampler.options.seed=1"],
            "the sampler's seed is sweep.sampler.seed",
        ),
        (
            "a sampler option of the wrong type",
            ["sweep", "sweep=smoke", "sweep.sampler.options.n_startup_trials=abc"],
            "bad sweep.sampler.options",
        ),
        (
            "a pruner option of the wrong type",
            ["sweep", "sweep=smoke", "sweep.pruner.options.n_warmup_steps=abc"],
            "bad sweep.pruner.options",
        ),
        (
            "a path component too long",
            ["train", "data=folder", f"data.path=/tmp/{'a' * 300}"],
            "too long",
        ),
        ("a file store", ["train", "tracking.uri=file:///tmp/mlruns"], "MLflow's file store"),
        ("an unknown tracking scheme", ["train", "tracking.uri=ftp://host/x"], "scheme 'ftp'"),
    ]
]


def _study_with_one_trial(outputs) -> None:
    import optuna

    outputs.mkdir(parents=True, exist_ok=True)
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


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the project's configs, sweep files and experiments, used through SATSWEEP_HOME."""
    root = tmp_path / "project"
    for folder in ("conf", "sweeps", "experiments"):
        shutil.copytree(REPO / folder, root / folder)
    monkeypatch.setenv("SATSWEEP_HOME", str(root))
    return root


BAD_SWEEP_FILES = [
    ("empty", "", "sweeps/bad.yaml is empty"),
    ("a list", "- 1\n- 2\n", "sweeps/bad.yaml holds a list, not a mapping"),
    ("a number", "5\n", "sweeps/bad.yaml holds a number, not a mapping"),
    ("no package line", "sweep:\n  study_name: x\n", "lacks its first line `# @package _global_`"),
    ("a Python tag", "# @package _global_\nseed: !!python/object/apply:os.getpid []\n", "plain"),
    ("an alias bomb", ALIAS_BOMB, "expands to more than 100000 values"),
    ("an alias loop", "# @package _global_\na: &a [*a]\n", "contains itself"),
]


@pytest.mark.faults
@pytest.mark.parametrize(
    ("case", "text", "named"), BAD_SWEEP_FILES, ids=[c[0] for c in BAD_SWEEP_FILES]
)
def test_a_bad_sweep_file_fails_only_the_command_that_chooses_it(
    outputs, project, capsys, case, text, named
) -> None:
    from satsweep.search.job import prepare_job

    (project / "sweeps" / "bad.yaml").write_text(text)
    assert run(["sweep", "sweep=bad"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], lines
    assert run(["train", "--cfg", "job"]) == 0  # the other commands pass it over
    assert prepare_job(["sweep=smoke"]).settings.study_name == "smoke"


def test_another_hydra_projects_conf_is_passed_over(outputs, tmp_path, monkeypatch) -> None:
    from satsweep.config import load_run_config

    other = tmp_path / "their_project"
    (other / "conf").mkdir(parents=True)
    (other / "conf" / "config.yaml").write_text("db: {driver: mysql}\n")
    monkeypatch.chdir(other)
    monkeypatch.delenv("SATSWEEP_HOME", raising=False)
    assert load_run_config([]).data.name == "aid"  # satsweep's own configs, not theirs


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


def test_options_may_follow_overrides(outputs, capsys) -> None:
    # the override after --tolerance reaches reproduce, which refuses to change a run
    assert run(["reproduce", "0" * 32, "--tolerance", "0.5", "trainer.epochs=3"]) == 2
    assert "trainer.epochs cannot change" in capsys.readouterr().err
    assert run(["compare", "nope", "--csv", "x.csv", "storage.url=/nonexistent/j"]) == 2
    assert "no study named 'nope'" in capsys.readouterr().err
