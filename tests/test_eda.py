"""The dataset report on real AID and on a folder with planted problems."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from satsweep.cli import run
from satsweep.figures import mosaic, tile_centres
from tests.conftest import REPO, run_satsweep


def _eda_run(outputs):
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("eda").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _table(client, run_id, name, tmp_path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, name, str(tmp_path)))


@pytest.mark.slow
def test_eda_on_all_of_aid(outputs, shared_cache, tmp_path) -> None:
    result = run_satsweep("eda", "data.image_size=16", f"paths.cache={shared_cache}")
    assert result.returncode == 0, result.stderr
    assert "10000 images in 30 classes" in result.stdout
    html_path = next(
        line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("report: ")
    )
    html = Path(html_path).read_text()
    for heading in (
        "Class balance",
        "Sample images",
        "Channel statistics",
        "Exact duplicates",
        "Leakage",
        "Files on disk",
    ):
        assert heading in html, heading
    assert html.count("data:image/png;base64,") >= 3  # self-contained

    client, logged = _eda_run(outputs)
    counts = _table(client, logged.info.run_id, "class_counts.csv", tmp_path)
    assert len(counts) == 30 and counts["count"].sum() == 10_000
    assert dict(zip(counts["class"], counts["count"], strict=True))["Port"] == 380
    assert logged.data.metrics["images"] == 10_000
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {
        "eda_report.html",
        "montage.png",
        "channel_stats.csv",
        "duplicates.csv",
        "leakage.csv",
    } <= artifacts


@pytest.mark.slow
def test_eda_finds_planted_problems_and_training_skips_them(
    outputs, aid_subset, tmp_path, tiny, caplog
) -> None:
    corrupt = aid_subset / "Beach" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    duplicate = sorted((aid_subset / "Forest").glob("*.jpg"))[0]
    shutil.copy(duplicate, aid_subset / "Port" / "copied_from_forest.jpg")
    gray = sorted((aid_subset / "Port").glob("*.jpg"))[0]
    Image.open(gray).convert("L").save(aid_subset / "Port" / "grayscale.png")
    data = ["data=folder", f"data.path={aid_subset}", "data.image_size=16"]

    assert run(["eda", *data]) == 0
    client, logged = _eda_run(outputs)
    run_id = logged.info.run_id
    unreadable = _table(client, run_id, "unreadable_files.csv", tmp_path)
    assert list(unreadable["path"]) == [str(corrupt)]
    duplicates = _table(client, run_id, "duplicates.csv", tmp_path)
    assert len(duplicates) == 1 and duplicates.loc[0, "where"] == "across classes"
    assert duplicates.loc[0, "classes"] == "Forest, Port"
    inventory = _table(client, run_id, "inventory.csv", tmp_path)
    assert "L" in set(inventory["mode"]) and "unreadable" in set(inventory["mode"])
    html = Path(client.download_artifacts(run_id, "eda_report.html", str(tmp_path))).read_text()
    assert "broken.jpg" in html and "copied_from_forest.jpg" in html

    caplog.set_level(logging.WARNING, logger="satsweep")
    assert (
        run(
            [
                "train",
                *tiny,
                *data,
                "data.classes=null",
                "data.max_per_class=null",
                "trainer.epochs=1",
                "tracking.log_model=false",
            ]
        )
        == 0
    )
    assert "skipped 1 unreadable image file(s)" in caplog.text and "broken.jpg" in caplog.text


def test_mosaic_tiles_real_images_on_white_and_leaves_missing_slots_white(data_dir) -> None:
    chips = sorted((data_dir / "aid" / "Beach").glob("*.jpg"))[:3]
    images = np.stack([np.asarray(Image.open(c).convert("RGB").resize((8, 6))) for c in chips])
    tiles = mosaic([images[:2], images[2:]], columns=2, gap=(3, 1))
    assert tiles.shape == (2 * 6 + 3, 2 * 8 + 1, 3) and tiles.dtype == np.uint8
    np.testing.assert_array_equal(tiles[:6, :8], images[0])
    np.testing.assert_array_equal(tiles[:6, 9:], images[1])
    np.testing.assert_array_equal(tiles[9:, :8], images[2])
    assert (tiles[6:9] == 255).all() and (tiles[:, 8] == 255).all()  # the gaps
    assert (tiles[9:, 9:] == 255).all()  # the second row has one image
    np.testing.assert_allclose(tile_centres(2, 8, 1), [3.5, 12.5])


def test_importing_satsweep_keeps_the_users_matplotlib_backend() -> None:
    """A notebook's inline backend must survive ``import satsweep`` and its drawing."""
    probe = (
        "import matplotlib\nmatplotlib.use('svg')\n"
        "import satsweep, satsweep.figures, satsweep.analysis.eda, satsweep.analysis.errors\n"
        "import satsweep.analysis.confusion, satsweep.search.record, satsweep.tracking\n"
        "from satsweep.figures import figure_png, subplots\n"
        "figure, axis = subplots(figsize=(2, 2))\naxis.plot([0, 1])\n"
        "assert figure_png(figure).startswith(b'\\x89PNG')\n"
        "import matplotlib.pyplot as plt\n"
        "print(matplotlib.get_backend(), len(plt.get_fignums()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert result.stdout.split() == ["svg", "0"], result.stderr[-2000:]
