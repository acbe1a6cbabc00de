"""Composition and validation: typed configs, and one-line errors for bad input."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from satsweep.config import load_run_config
from satsweep.errors import UserError
from satsweep.schema import AdamWConfig, MLPConfig, ResNetConfig, SGDConfig
from tests.conftest import REPO, run_satsweep


def test_defaults_compose_to_typed_objects(outputs) -> None:
    cfg = load_run_config([])
    assert isinstance(cfg.model, ResNetConfig) and cfg.model.bn_momentum == 0.9
    assert isinstance(cfg.optimizer, AdamWConfig) and cfg.optimizer.schedule.name == "cosine"
    assert cfg.data.name == "aid" and cfg.data.path.endswith("/aid")
    assert cfg.tracking.uri == f"sqlite:///{outputs}/mlflow.db"


def test_group_choices_and_values_override(outputs) -> None:
    cfg = load_run_config(["model=mlp", "optimizer=sgd", "optimizer.lr=0.05", "data.image_size=48"])
    assert isinstance(cfg.model, MLPConfig)
    assert isinstance(cfg.optimizer, SGDConfig) and cfg.optimizer.lr == 0.05
    assert cfg.data.image_size == 48


def test_binary_experiment(outputs) -> None:
    cfg = load_run_config(["+experiment=aid_port_binary"])
    assert cfg.data.positive_classes == ["Port"]
    assert cfg.data.negative_ratio == 3


def test_mlflow_tracking_uri_env_is_respected(outputs, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/elsewhere.db")
    assert load_run_config([]).tracking.uri == "sqlite:////tmp/elsewhere.db"


BAD_OVERRIDES = [
    (["model=resnet9000"], "model/resnet9000"),
    (["data=nope"], "data/nope"),
    (["optimizer=adagrad"], "optimizer/adagrad"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["optimizer.lr=0"], "optimizer.lr"),
    (["data.image_size=0"], "data.image_size"),
    (["trainer.epochs=0"], "trainer.epochs"),
    (["trainer.batch_size=-4"], "trainer.batch_size"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["trainer.epoch=3"], "trainer.epoch"),
    (["+trainer.epoch=3"], "trainer.epoch"),
    (["data.split.train=0.5"], "sum to"),
    (["data.negative_ratio=-1"], "data.negative_ratio"),
    (["data=folder"], "data.path"),
    (["optimizer.name=foo"], "'foo'"),
    (["+experiment=missing"], "experiment/missing"),
    (["data.classes=[Beach"], "[Beach"),
    (["optimizer=adam", "optimizer.momentum=0.5"], "optimizer.momentum"),
    (["model.bn_momentum=1.0"], "model.bn_momentum"),
    (["model.stem_stride=3"], "model.stem_stride"),
    (["model.width=0"], "model.width"),
    (["model=separable", "model.expansion=0"], "model.expansion"),
    (["model=backbone", "model.architecture=VGG99"], "model.architecture"),
    (["model=backbone", "model.input_size=16"], "model.input_size"),
    (["model=backbone", "model.fine_tune_lr_ratio=0"], "model.fine_tune_lr_ratio"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay"),
    (["optimizer.use_ema=maybe"], "optimizer.use_ema"),
    (["optimizer.ema_momentum=1.5"], "optimizer.ema_momentum"),
    (["optimizer.schedule.name=linear"], "optimizer.schedule.name"),
    (["optimizer.schedule.warmup_epochs=-1"], "optimizer.schedule.warmup_epochs"),
    (["optimizer.schedule.name=step"], "warmup_epochs=0"),
    (["trainer.label_smoothing=1.0"], "trainer.label_smoothing"),
    (["trainer.augment.translate=0.9"], "trainer.augment.translate"),
    (["trainer.augment.brightness=2"], "trainer.augment.brightness"),
    (["trainer.augment.contrast=-0.1"], "trainer.augment.contrast"),
    (["trainer.augment.mixup=-1"], "trainer.augment.mixup"),
    (["trainer.augment.cutmix=-1"], "trainer.augment.cutmix"),
    (["trainer.tta=rot45"], "trainer.tta"),
    (["tracking.retry_seconds=[1,-2]"], "tracking.retry_seconds"),
    (["tracking.retry_seconds=5"], "tracking.retry_seconds"),
]


@pytest.mark.parametrize(("overrides", "named"), BAD_OVERRIDES)
def test_bad_config_is_one_line_naming_the_key(outputs, overrides, named) -> None:
    with pytest.raises(UserError) as raised:
        load_run_config(overrides)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["train", "model=nope"], "model/nope"),
        (["train", "optimizer.lr=-1"], "optimizer.lr"),
        (["train", "data.image_size=0"], "data.image_size"),
        (["train", "data.path=/nonexistent/aid"], "/nonexistent/aid"),
        (["train", "data.classes=[Atlantis]"], "Atlantis"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(outputs, args, named) -> None:
    result = run_satsweep(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and named in error_lines[0], result.stderr


@pytest.mark.parametrize(("args", "code"), [(["--cfg", "job"], 0), (["model=nope"], 2)])
def test_cli_exit_still_runs_thread_pools_and_exit_handlers(outputs, args, code) -> None:
    """The console script skips the interpreter's teardown, not what a normal exit runs."""
    script = (
        "import atexit, sys, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from satsweep.cli import main\n"
        "pool = ThreadPoolExecutor(1)\n"
        "pool.submit(lambda: time.sleep(0.5) or print('pool task done', flush=True))\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        f"sys.argv = ['satsweep', 'train', *{args!r}]\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == code, result.stderr
    said = [line for line in result.stdout.splitlines() if line.endswith(("done", "ran"))]
    assert said == ["pool task done", "exit handler ran"], result.stdout
    if code == 0:
        assert "name: resnet" in result.stdout  # the composed config, flushed before the exit
    else:
        assert "model/nope" in result.stderr


@pytest.mark.fresh_store
def test_cfg_job_prints_config_without_training(outputs) -> None:
    result = run_satsweep("train", "model=mlp", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "hidden_units" in result.stdout and "name: mlp" in result.stdout
    assert not (outputs / "mlflow.db").exists()


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml") if p.stem != "_base")
)
def test_every_shipped_sweep_file_validates(outputs, name) -> None:
    from satsweep.search.job import prepare_job

    job = prepare_job([f"sweep={name}"])
    assert job.settings.study_name == name and job.space.dimensions
    assert job.settings.final_fit.enabled  # on by default: every sweep answers with a model


def test_every_metric_a_run_logs_once_is_an_objective(outputs) -> None:
    """The calibration error too: the error analysis logs it as test_ece."""
    from satsweep.search.job import prepare_job

    job = prepare_job(
        [
            "sweep=smoke",
            "sweep.objectives=[test_ece]",
            "sweep.directions=[minimize]",
            "sweep.pruner.name=none",
        ]
    )
    assert job.settings.objectives == ["test_ece"]
    with pytest.raises(UserError, match="no run produces the objective 'test_ece'"):
        prepare_job(
            [
                "sweep=smoke",
                "sweep.objectives=[test_ece]",
                "sweep.directions=[minimize]",
                "sweep.pruner.name=none",
                "tracking.error_analysis=false",
            ]
        )


def test_help_lists_the_config_groups_and_their_options() -> None:
    from satsweep.cli import build_parser

    text = build_parser().format_help()
    assert "config groups" in text
    assert re.search(r"^  model +backbone, cnn, mlp, resnet, separable$", text, re.MULTILINE)
    assert re.search(r"^  sweep +aid_pareto, aid_tpe, quick, smoke$", text, re.MULTILINE)
    assert "_common" not in text  # files starting with _ are bases, not options


def test_experiments_and_sweeps_are_hydra_groups_without_links(outputs, tmp_path) -> None:
    """conf/ holds no links; a broken sweep file fails only the command that chooses it."""
    assert not [p for p in (REPO / "conf").rglob("*") if p.is_symlink()]
    project = tmp_path / "project"
    for folder in ("conf", "experiments", "sweeps"):
        shutil.copytree(REPO / folder, project / folder)
    (project / "sweeps" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - _base\n  - _self_\n"
        "sweep:\n  study_name: mine\n  params: {optimizer.lr: 'interval(0.001, 0.01)'}\n"
    )
    (project / "sweeps" / "broken.yaml").write_text("sweep: {study_name: 'x}\n")
    home = {"SATSWEEP_HOME": str(project)}

    shown = run_satsweep("sweep", "sweep=mine", "--workers", "-1", env=home)
    assert "--workers -1 starts no worker" in shown.stderr  # mine.yaml composed and validated
    listed = run_satsweep("--help", env=home)
    assert re.search(
        r"^  sweep +aid_pareto, aid_tpe, broken, mine, quick, smoke$", listed.stdout, re.M
    )
    chosen = run_satsweep("sweep", "sweep=broken", env=home)
    assert chosen.returncode == 2 and "not valid YAML" in chosen.stderr
    assert "Traceback" not in chosen.stderr
