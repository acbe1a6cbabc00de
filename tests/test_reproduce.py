"""Reproduce a logged run bit for bit, detect data drift, and tinker from a run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from satsweep.cli import run
from tests.conftest import run_in_process


def _client(outputs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{outputs}/mlflow.db")


def _runs(outputs: Path, experiment: str = "satsweep"):
    client = _client(outputs)
    return client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id],
        order_by=["attributes.start_time ASC"],
    )


def _no_model(tiny: list[str]) -> list[str]:
    return [*tiny, "tracking.log_model=false"]


@pytest.mark.slow
def test_reproduce_gives_identical_metrics(outputs, tiny, capsys, caplog) -> None:
    assert run(["train", *_no_model(tiny)]) == 0
    original = _runs(outputs)[0]
    assert original.data.tags["satsweep.reproduce_command"] == (
        f"satsweep reproduce {original.info.run_id}"
    )
    assert run(["reproduce", original.info.run_id]) == 0
    output = capsys.readouterr().out
    assert "confusion matrix: identical" in output and "reproduced: max |difference| 0" in output
    # an override of what was trained would be dropped: refused, naming train --from-run
    assert run(["reproduce", original.info.run_id, "trainer.epochs=5"]) == 2
    refused = capsys.readouterr().err
    assert "trainer.epochs cannot change" in refused and "train --from-run" in refused

    original, again = _runs(outputs)
    assert again.data.tags["satsweep.reproduces"] == original.info.run_id
    assert again.data.tags["satsweep.reproduce_verdict"] == "match"
    finals = [k for k in original.data.metrics if k.startswith(("val_", "test_"))]
    assert finals and all(again.data.metrics[k] == original.data.metrics[k] for k in finals)
    assert again.data.metrics["reproduce_max_abs_diff"] == 0.0

    # a run logged before a knob existed still reproduces, with today's value for it
    client, run_id = _client(outputs), original.info.run_id
    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    del config["trainer"]["eval_batch_size"]
    client.log_text(run_id, yaml.safe_dump(config), "config.yaml")
    assert run(["reproduce", run_id]) == 0
    output = capsys.readouterr().out
    assert "reproduced: max |difference| 0" in output
    assert "trainer.eval_batch_size is newer than the run: today's value is used" in caplog.text


@pytest.mark.slow
def test_reproduce_is_bit_for_bit_with_every_recipe_knob_on(outputs, tiny, capsys) -> None:
    knobs = [
        "optimizer=sgd",
        "optimizer.schedule.name=onecycle",
        "optimizer.weight_decay=0.01",
        "optimizer.use_ema=true",
        "trainer.label_smoothing=0.1",
        "trainer.augment.translate=0.25",
        "trainer.augment.brightness=0.2",
        "trainer.augment.contrast=0.2",
        "trainer.augment.mixup=0.2",
        "trainer.augment.cutmix=1.0",
        "trainer.tta=dihedral",
        "data.train_share=0.5",  # a fidelity: half of each class's training images
    ]
    assert run(["train", *_no_model(tiny), *knobs]) == 0
    original = _runs(outputs)[0]
    assert original.data.params["trainer.augment.cutmix"] == "1.0"
    assert original.data.params["data.train_share"] == "0.5"
    assert run(["reproduce", original.info.run_id]) == 0
    output = capsys.readouterr().out
    assert "confusion matrix: identical" in output and "reproduced: max |difference| 0" in output


@pytest.mark.slow
def test_reproduce_refuses_changed_data(outputs, tiny, aid_subset, capfd, caplog) -> None:
    data = [
        "data=folder",
        f"data.path={aid_subset}",
        "data.classes=null",
        "data.max_per_class=null",
    ]
    assert run(["train", *_no_model(tiny), *data]) == 0
    run_id = _runs(outputs)[0].info.run_id
    victim = sorted((aid_subset / "Forest").glob("*.jpg"))[3]
    Image.open(victim).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)

    outside = f"data.path={aid_subset}"  # outside the data folder: the user must say so
    code, _, stderr = run_in_process(capfd, caplog, "reproduce", run_id, outside)
    assert code == 2 and "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "data digest differs" in lines[0], stderr

    code = run(["reproduce", run_id, outside, "--allow-data-change"])
    output = capfd.readouterr().out
    assert code in (0, 1) and "logged vs reproduced" in output
    assert len(_runs(outputs)) == 2


@pytest.mark.slow
def test_train_from_run_changes_only_the_override(outputs, tiny) -> None:
    assert run(["train", *_no_model(tiny)]) == 0
    original = _runs(outputs)[0]
    same_cache = [o for o in tiny if o.startswith("paths.cache=")]
    assert (
        run(
            [
                "train",
                "--from-run",
                original.info.run_id,
                "optimizer.lr=0.01",
                "tracking.log_model=false",
                *same_cache,
            ]
        )
        == 0
    )
    derived = _runs(outputs)[1]
    assert derived.data.tags["satsweep.derived_from"] == original.info.run_id
    assert derived.data.tags["satsweep.changed_keys"] == "optimizer.lr"
    assert derived.data.params["optimizer.lr"] == "0.01"
    before = {k: v for k, v in original.data.params.items() if k != "optimizer.lr"}
    after = {k: v for k, v in derived.data.params.items() if k != "optimizer.lr"}
    assert before == after
    path = _client(outputs).download_artifacts(derived.info.run_id, "changes.yaml")
    changes = yaml.safe_load(Path(path).read_text())
    assert changes == {"optimizer.lr": {"from": 0.003, "to": 0.01}}


@pytest.mark.slow
def test_unknown_or_foreign_runs_are_user_errors(outputs, tiny, capfd, caplog) -> None:
    code, _, stderr = run_in_process(capfd, caplog, "reproduce", "0123456789abcdef0123456789abcdef")
    assert code == 2 and "no MLflow run" in stderr and "Traceback" not in stderr
    client = _client(outputs)
    foreign = client.create_run(
        client.get_experiment_by_name("satsweep").experiment_id
        if client.get_experiment_by_name("satsweep")
        else client.create_experiment("satsweep")
    )
    code, _, stderr = run_in_process(capfd, caplog, "reproduce", foreign.info.run_id)
    assert code == 2 and "not made by satsweep" in stderr
