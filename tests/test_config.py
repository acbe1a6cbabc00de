"""Composition and validation: typed configs, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from satsweep.config import load_run_config
from satsweep.errors import UserError
from satsweep.schema import AdamConfig, CNNConfig, MLPConfig, SGDConfig
from tests.conftest import run_satsweep


def test_defaults_compose_to_typed_objects(outputs) -> None:
    cfg = load_run_config([])
    assert isinstance(cfg.model, CNNConfig)
    assert isinstance(cfg.optimizer, AdamConfig)
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
]


@pytest.mark.parametrize(("overrides", "named"), BAD_OVERRIDES)
def test_bad_config_is_one_line_naming_the_key(outputs, overrides, named) -> None:
    with pytest.raises(UserError) as raised:
        load_run_config(overrides)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message


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


def test_cfg_job_prints_config_without_training(outputs) -> None:
    result = run_satsweep("train", "model=mlp", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "hidden_units" in result.stdout and "name: mlp" in result.stdout
    assert not (outputs / "mlflow.db").exists()
