"""The Python API: the CLI's commands as functions, on the CLI's own code paths."""

from __future__ import annotations

import os
import re

import mlflow
import pytest

import satsweep
from satsweep import UserError, compose, train
from tests.conftest import run_satsweep


@pytest.mark.slow
def test_train_from_python_logs_a_run_that_exists_in_mlflow(
    outputs, shared_cache, tmp_path
) -> None:
    result = train(
        [
            "data.max_per_class=20",
            "trainer.epochs=1",
            "trainer.min_steps_per_epoch=0",
            f"paths.cache={shared_cache}",
        ]
    )
    run = mlflow.MlflowClient(compose().tracking.uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_f1_macro"] == pytest.approx(result.metrics["test_f1_macro"])
    assert len(result.class_names) == 30 and result.epochs_run == 1
    assert result.link.endswith(f"/runs/{result.run_id}?workflowType=machine_learning")
    shown = result._repr_html_()  # what a notebook renders
    assert "test_f1_macro" in shown and result.link in shown

    assert satsweep.artifact(result.run_id, "test_probabilities.npy").shape[1] == 30
    assert satsweep.run_metrics(result.run_id) == run.data.metrics
    with pytest.raises(UserError, match="no run 'nope'"):
        satsweep.run_metrics("nope")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    mlflow.MlflowClient(compose().tracking.uri).log_artifact(result.run_id, str(blob))
    for path, said in [
        ("error_analysis", "is a folder, not a file"),
        ("", "needs the path of one file"),
        ("blob.bin", "cannot be read as .bin"),
    ]:
        with pytest.raises(UserError, match=said) as raised:
            satsweep.artifact(result.run_id, path)
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("trainer.epochs=1", "not one string: pass ['trainer.epochs=1']"),
        ({"trainer.epochs": 1}, "not a dict"),
        (None, "got None"),
        ([1, 2], "got [1, 2]"),
    ],
    ids=["string", "dict", "None", "numbers"],
)
def test_overrides_that_are_not_a_list_of_strings_are_one_line(outputs, given, said) -> None:
    for function in (satsweep.train, satsweep.compose, satsweep.sweep, satsweep.eda):
        with pytest.raises(UserError, match=re.escape(said)):
            function(given)


@pytest.mark.slow
def test_two_outputs_folders_in_one_process_log_to_their_own_stores(
    outputs, tmp_path, shared_cache, tiny
) -> None:
    # a notebook trains into one folder, then another: the second must not reuse the first store
    fast = [*tiny, "trainer.epochs=1", "tracking.log_model=true", "tracking.error_analysis=false"]
    runs = {}
    for name in ("first", "second"):
        folder = tmp_path / name
        runs[name] = train([*fast, f"paths.outputs={folder}"]).run_id
        uri = compose([f"paths.outputs={folder}"]).tracking.uri
        assert uri == f"sqlite:///{folder}/mlflow.db"
        assert mlflow.MlflowClient(uri).get_run(runs[name]).info.status == "FINISHED"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # logging the model left nothing behind


def test_the_package_names_are_the_functions_even_after_every_module_loads() -> None:
    import satsweep.exploration
    import satsweep.reproduction
    import satsweep.search.launcher
    import satsweep.training

    for name in ("train", "sweep", "eda", "reproduce", "compose", "run_metrics", "artifact"):
        assert callable(getattr(satsweep, name)), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "overrides"),
    [
        ("train", ["trainer.epoch=3"]),
        ("train", ["trainer.epochs=many"]),
        ("train", ["model=transformer"]),
        ("sweep", ["sweep=nope"]),
        ("eda", ["data.image_size=-4"]),
        ("train", ["tracking=server", "tracking.uri=http://ann:s3cret/x@127.0.0.1:9/"]),
    ],
)
def test_a_bad_override_raises_the_cli_s_one_line_error(outputs, command, overrides) -> None:
    with pytest.raises(UserError) as raised:
        getattr(satsweep, command)(overrides)
    cli = run_satsweep(command, *overrides)
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"satsweep: error: {raised.value}"
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
