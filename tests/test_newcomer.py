"""The way in for a newcomer: a machine without AID, EuroSAT in one command, the README's commands.

A user without AID is told where to get it and the command that runs the same
sweep on data they can have; that command then works end to end, here on a small
EuroSAT-like zip served from 127.0.0.1 (there is no internet). Every ``satsweep``
command the README shows still composes.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import shlex
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, journal_study
from optuna.trial import TrialState
from PIL import Image

from satsweep import cli

EUROSAT_CLASSES = ("AnnualCrop", "Forest", "SeaLake")


def _eurosat_zip() -> bytes:
    """EuroSAT's layout (``2750/<Class>/<Class>_<n>.jpg``, 64 px), in a few coloured chips."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for index, name in enumerate(EUROSAT_CLASSES):
            for i in range(12):
                image = io.BytesIO()
                colour = tuple((40 * index + 90 * channel + 7 * i) % 256 for channel in range(3))
                Image.new("RGB", (64, 64), colour).save(image, format="JPEG")
                bundle.writestr(f"2750/{name}/{name}_{i}.jpg", image.getvalue())
    return buffer.getvalue()


@pytest.fixture
def served_zip(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URL, md5) of a EuroSAT-like zip served over HTTP from 127.0.0.1 while the test runs."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "EuroSAT.zip").write_bytes(_eurosat_zip())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    digest = hashlib.md5((folder / "EuroSAT.zip").read_bytes()).hexdigest()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/EuroSAT.zip", digest
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _commands_in(message: str) -> list[list[str]]:
    """The commands a message quotes between backticks, as argument lists after ``satsweep``."""
    return [shlex.split(found)[1:] for found in re.findall(r"`(satsweep [^`]+)`", message)]


@pytest.mark.slow
def test_without_aid_the_sweep_names_its_source_and_the_eurosat_command_works(
    outputs, tmp_path, monkeypatch, capsys, served_zip, shared_cache
) -> None:
    empty = tmp_path / "no_data"
    empty.mkdir()
    monkeypatch.setenv("SATSWEEP_DATA_DIR", str(empty))
    assert cli.run(["sweep", "sweep=quick"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    said = lines[0]
    assert "https://captain-whu.github.io/AID/" in said and str(empty / "aid") in said
    eurosat, own_folder = _commands_in(said)
    assert eurosat == ["sweep", "sweep=quick", "data=eurosat", "data.download.enabled=true"]
    assert own_folder == ["sweep", "sweep=quick", "data=folder", "data.path=DIR"]
    assert not (outputs / "optuna.journal").exists()  # nothing started

    url, md5 = served_zip
    small = [
        f"data.download.url={url}",
        f"data.download.checksum=md5:{md5}",
        "data.image_size=16",
        "data.max_per_class=8",
        "model.stages=2",
        "model.width=8",
        "trainer.epochs=1",
        "trainer.min_steps_per_epoch=0",
        "sweep.n_trials=1",
        "sweep.final_fit.enabled=false",
        f"paths.cache={shared_cache}",
    ]
    assert cli.run([*eurosat, *small, "--workers", "1"]) == 0, capsys.readouterr().err
    unpacked = empty / "eurosat" / "2750"
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(EUROSAT_CLASSES)
    study = journal_study(outputs, "quick")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert study.user_attrs["satsweep_identity"]["data"] == "eurosat"


def _readme_commands() -> list[list[str]]:
    """Every ``satsweep ...`` line of the README's shell blocks, comments and prompts dropped."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", readme, flags=re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip().removeprefix("$ ")
            if line.startswith("satsweep "):
                commands.append(shlex.split(line)[1:])
    return commands


COMPOSING = {"train", "sweep", "worker", "eda", "compare-backends"}


@pytest.mark.slow
def test_every_readme_command_composes(outputs, capsys) -> None:
    """Each documented command that composes a config does so with ``--cfg job``."""
    commands = [c for c in _readme_commands() if c and c[0] in COMPOSING]
    assert len({c[0] for c in commands}) >= 4, commands  # the parse found the README's blocks
    failures = []
    for command in commands:
        # placeholders a reader fills in: a folder of images, a run id
        args = [
            a.replace("DIR", str(REPO / "tests")).replace("/my/images", "/tmp") for a in command
        ]
        code = cli.run([*args, "--cfg", "job"])
        output = capsys.readouterr()
        if code != 0:
            failures.append(f"satsweep {shlex.join(command)}: {output.err.strip()[-300:]}")
    assert not failures, "\n".join(failures)


def test_the_readme_is_a_door_not_a_lab_notebook() -> None:
    """Under 25 KB, with no commit hashes: results live in docs/, history in git."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 25_000
    hashes = re.findall(
        r"`([0-9a-f]{7,12})`|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,12}\b", readme
    )
    assert not hashes, hashes
    for linked in re.findall(r"\]\(((?:docs|sweeps|conf)/[^)#]+)\)", readme):
        assert (REPO / linked).exists(), linked
