"""Every user error is one line on stderr, exit code 2, and no traceback.

The list below is the contract: configs, overrides, sweep files, data folders
and run ids, each through the CLI's ``run`` in the test's process (a child would
add only its start-up; the console script's own exit is tested in test_config.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_in_process

BAD_INPUTS: list[tuple[str, list[str], str]] = [
    ("unknown model", ["train", "model=resnet9000"], "model/resnet9000"),
    ("unknown data", ["train", "data=imagenet"], "data/imagenet"),
    ("unknown optimizer", ["train", "optimizer=adagrad"], "optimizer/adagrad"),
    ("unknown experiment", ["train", "+experiment=nope"], "experiment/nope"),
    ("unknown key", ["train", "trainer.epoch=3"], "trainer.epoch"),
    ("unknown appended key", ["train", "+trainer.epoch=3"], "trainer.epoch"),
    ("wrong type", ["train", "trainer.epochs=many"], "trainer.epochs"),
    ("zero epochs", ["train", "trainer.epochs=0"], "trainer.epochs"),
    ("zero batch size", ["train", "trainer.batch_size=0"], "trainer.batch_size"),
    ("zero image size", ["train", "data.image_size=0"], "data.image_size"),
    ("zero learning rate", ["train", "optimizer.lr=0"], "optimizer.lr"),
    ("negative learning rate", ["train", "optimizer.lr=-0.1"], "optimizer.lr"),
    ("split not summing to 1", ["train", "data.split.train=0.5"], "sum to"),
    ("negative ratio", ["train", "data.negative_ratio=-1"], "data.negative_ratio"),
    ("no training images", ["train", "data.train_share=0"], "data.train_share=0"),
    ("more than all training images", ["train", "data.train_share=1.5"], "data.train_share"),
    ("malformed override", ["train", "data.classes=[Beach"], "[Beach"),
    ("missing required path", ["train", "data=folder"], "data.path"),
    ("missing dataset", ["train", "data.path=/nonexistent/aid"], "/nonexistent/aid"),
    ("unknown class", ["train", "data.classes=[Atlantis]"], "Atlantis"),
    ("no sweep chosen", ["sweep"], "sweep=NAME"),
    ("unknown sweep", ["sweep", "sweep=nope"], "sweep/nope"),
    ("unknown sampler", ["sweep", "sweep=smoke", "sweep.sampler.name=annealing"], "annealing"),
    ("unknown pruner", ["sweep", "sweep=smoke", "sweep.pruner.name=lazy"], "lazy"),
    (
        "an option of the sampler switched from",
        ["sweep", "sweep=smoke", "sweep.sampler.name=random"],
        "~sweep.sampler.options.n_startup_trials",
    ),
    ("zero trials", ["sweep", "sweep=smoke", "sweep.n_trials=0"], "n_trials"),
    ("a tracking server with no process", ["server", "--workers", "0"], "--workers 0"),
    (
        "kerastuner with two workers",
        ["sweep", "sweep=smoke", "sweep.backend=kerastuner", "--workers", "2"],
        "one worker, not 2",
    ),
    (
        "kerastuner with two objectives",
        [
            "sweep",
            "sweep=smoke",
            "sweep.backend=kerastuner",
            "sweep.objectives=[val_f1_macro,params_count]",
            "sweep.directions=[maximize,minimize]",
        ],
        "one objective, not 2",
    ),
    (
        "kerastuner choices of two types",
        ["sweep", "sweep=smoke", "sweep.backend=kerastuner", "model.dropout=choice(0.1,none)"],
        "model.dropout",
    ),
    ("unknown kerastuner tuner", ["sweep", "sweep=smoke", "sweep.kerastuner.tuner=grid"], "grid"),
    (
        "zero trials per process",
        ["sweep", "sweep=smoke", "sweep.trials_per_process=0"],
        "sweep.trials_per_process",
    ),
    (
        "compare method with a bad override",
        [
            "compare-backends",
            "sweep=smoke",
            "sweep.compare.methods.optuna_random=['sweep.sampler.name=annealing']",
        ],
        "sweep.compare.methods.optuna_random",
    ),
    (
        "compare with no seed",
        ["compare-backends", "sweep=smoke", "sweep.compare.seeds=[]"],
        "seeds",
    ),
    (
        "objective no run makes",
        ["sweep", "sweep=smoke", "sweep.objectives=[val_magic]", "sweep.pruner.name=none"],
        "val_magic",
    ),
    ("misspelled swept path", ["sweep", "sweep=smoke", "model.blockz=choice(1,2)"], "model.blockz"),
    (
        "malformed sweep grammar",
        ["sweep", "sweep=smoke", "optimizer.lr=interval(0.1,"],
        "optimizer.lr",
    ),
    (  # valid with the base optimizer (adam); trials that choose sgd would fail
        "swept key of one group choice only",
        ["sweep", "sweep=smoke", "optimizer.beta_1=interval(0.8, 0.95)"],
        "fail together (optimizer=sgd",
    ),
    (
        "swept range out of bounds",
        ["sweep", "sweep=smoke", "model.dropout=interval(0.5, 2.0)"],
        "model.dropout",
    ),
    ("unknown run id", ["reproduce", "0" * 32], "no MLflow run"),
    ("unknown run for --from-run", ["train", "--from-run", "f" * 32], "no MLflow run"),
    ("unknown study", ["compare", "nope"], "no study named 'nope'"),
    ("unknown study to reproduce", ["reproduce", "--study", "nope", "--best"], "nope"),
    ("eda on missing data", ["eda", "data.path=/nonexistent/aid"], "/nonexistent/aid"),
]


def _folder(root: Path, source: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for image in sorted((source / name).glob("*.jpg"))[:count]:
            shutil.copy(image, root / name / image.name)
    return root


BAD_FOLDERS = [
    ("empty class folder", {"Beach": 10, "Forest": 0}, "holds no images"),
    ("a single class", {"Beach": 10}, "only the class 'Beach'"),
    ("too few images for the split", {"Beach": 10, "Forest": 2}, "class 'Forest' has 2"),
]


def _assert_one_line_error(said: tuple[int, str, str], named: str) -> None:
    code, _, stderr = said
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("satsweep: error: ") and named in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize(("case", "args", "named"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line(outputs, capfd, caplog, case, args, named) -> None:
    _assert_one_line_error(run_in_process(capfd, caplog, *args), named)


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize(("case", "counts", "named"), BAD_FOLDERS, ids=[c[0] for c in BAD_FOLDERS])
def test_bad_data_folder_is_one_line(
    outputs, data_dir, tmp_path, capfd, caplog, case, counts, named
) -> None:
    folder = _folder(tmp_path / "images", data_dir / "aid", counts)
    said = run_in_process(capfd, caplog, "train", "data=folder", f"data.path={folder}")
    _assert_one_line_error(said, named)


HEAVY = ("tensorflow", "keras", "sklearn", "mlflow", "optuna.visualization")


@pytest.mark.parametrize(
    "args",
    [["train", "trainer.epochs=0"], ["sweep", "sweep=quick", "sweep.n_trials=0"]],
    ids=["train", "sweep"],
)
def test_a_config_error_answers_before_the_heavy_libraries_load(outputs, args) -> None:
    # the modules loaded, not the time taken: a loaded machine cannot fail this
    probe = (
        "import sys\nfrom satsweep.cli import run\n"
        f"code = run({args!r})\n"
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.stdout.split("\n")[-2] == "2 []", (result.stdout, result.stderr)
    assert "satsweep: error:" in result.stderr
