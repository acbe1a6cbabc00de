"""Hostile inputs, one row each: a clear one-line error (exit 2), or a warning and exit 0.

Kinds: sweep files that are not YAML, image files PIL refuses for reasons other
than a decode error, chip JSON outside 0..255, values that used to fail only
inside Keras or scikit-learn, names used as paths, unusable output folders,
database errors, inputs that were silently accepted, and misleading messages.
No row may end in a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import run_in_process

PG = "postgresql://postgres@127.0.0.1:5432"
FAST = [
    "trainer=quick",
    "trainer.epochs=1",
    "trainer.min_steps_per_epoch=0",
    "tracking.log_model=false",
]
Setup = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]  # "{tmp}" is the test's folder, "{data}" the AID folder
    words: str  # in the error line, or in the warning
    warns: bool = False  # exit 0 with a warning, not exit 2
    setup: Setup | None = None
    env: dict[str, str] = field(default_factory=dict)


def _write(relative: str, content: bytes | str) -> Setup:
    def setup(tmp: Path, data: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def _images(*extra: Setup) -> Setup:
    """Three small AID classes under tmp/images, then ``extra`` hostile files."""

    def setup(tmp: Path, data: Path) -> None:
        for name in ("Beach", "Forest", "Port"):
            (tmp / "images" / name).mkdir(parents=True, exist_ok=True)
            for image in sorted((data / "aid" / name).glob("*.jpg"))[:8]:
                shutil.copy(image, tmp / "images" / name / image.name)
        for step in extra:
            step(tmp, data)

    return setup


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def _non_utf8_name(tmp: Path, data: Path) -> None:
    source = sorted((data / "aid" / "Beach").glob("*.jpg"))[0]
    folder = os.fsencode(tmp / "images" / "Beach")
    shutil.copy(source, os.path.join(folder, b"caf\xe9.jpg"))


def _linked_class(tmp: Path, data: Path) -> None:
    (tmp / "images" / "BeachAgain").symlink_to(tmp / "images" / "Beach")


def _truncated_jpeg(tmp: Path, data: Path) -> None:
    source = sorted((data / "aid" / "Port").glob("*.jpg"))[0].read_bytes()
    (tmp / "images" / "Port" / "cut.jpg").write_bytes(source[: len(source) // 3])


def _chips(values: object, labels: object = (0, 1, 0, 1)) -> Setup:
    return _write("chips.json", json.dumps({"data": values, "labels": list(labels)}))


CHIP = ["data=shipsnet", "data.path={tmp}/chips.json", "data.chip_size=2", "data.image_size=8"]
BROKEN_SWEEP = "# @package _global_\ndefaults:\n  - _base\nsweep:\n  params: {a: [1\n"
SEARCH = "hydra.searchpath=[file://{tmp}/extra]"
EDA = ["eda", "data=folder", "data.path={tmp}/images", "data.image_size=16"]

CASES = [
    # sweep and experiment files that are not valid YAML
    Case(
        "sweep file with an unclosed list",
        ["sweep", "sweep=bad", SEARCH],
        "not valid YAML",
        setup=_write("extra/sweep/bad.yaml", BROKEN_SWEEP),
    ),
    Case(
        "sweep file with a tab",
        ["sweep", "sweep=bad", SEARCH],
        "not valid YAML",
        setup=_write("extra/sweep/bad.yaml", "sweep:\n\tstudy_name: x\n"),
    ),
    Case(
        "sweep file with an unclosed quote",
        ["sweep", "sweep=bad", SEARCH],
        "not valid YAML",
        setup=_write("extra/sweep/bad.yaml", "sweep: {study_name: 'x}\n"),
    ),
    Case(
        "experiment file that is not YAML",
        ["train", "+experiment=bad", SEARCH],
        "not valid YAML",
        setup=_write("extra/experiment/bad.yaml", "model: [resnet\n"),
    ),
    # image files PIL refuses for reasons other than a decode error: skipped with a warning
    Case(
        "decompression bomb header",
        EDA,
        "skipped 1 unreadable",
        warns=True,
        setup=_images(_write("images/Beach/bomb.png", _png_header(60000, 60000))),
    ),
    Case(
        "file name that is not UTF-8", EDA, "not UTF-8", warns=True, setup=_images(_non_utf8_name)
    ),
    Case(
        "empty image file",
        EDA,
        "skipped 1 unreadable",
        warns=True,
        setup=_images(_write("images/Forest/empty.jpg", b"")),
    ),
    Case(
        "text file named .png",
        EDA,
        "skipped 1 unreadable",
        warns=True,
        setup=_images(_write("images/Forest/notes.png", "not an image")),
    ),
    Case("truncated JPEG", EDA, "skipped 1 unreadable", warns=True, setup=_images(_truncated_jpeg)),
    Case(
        "symlink beside the class folders",
        EDA,
        "linked folder",
        warns=True,
        setup=_images(_linked_class),
    ),
    Case(
        "data.path is a file",
        ["train", "data=folder", "data.path={tmp}/x.jpg"],
        "is a file, not a folder",
        setup=_write("x.jpg", "x"),
    ),
    # chip JSON
    Case("chip values above 255", ["train", *CHIP], "0..255", setup=_chips([[300] * 12] * 4)),
    Case("negative chip values", ["train", *CHIP], "0..255", setup=_chips([[-1] * 12] * 4)),
    Case(
        "chip values as 0..1 floats", ["train", *CHIP], "fractions", setup=_chips([[0.5] * 12] * 4)
    ),
    Case(
        "chip labels other than 0/1",
        ["train", *CHIP],
        "labels must be 0 or 1",
        setup=_chips([[9] * 12] * 4, labels=(0, 1, 2, 1)),
    ),
    Case(
        "ragged chips",
        ["train", *CHIP],
        "not ShipsNet",
        setup=_chips([[1] * 12, [1] * 5, [1] * 12, [1] * 12]),
    ),
    Case(
        "chip file that is a list",
        ["train", *CHIP],
        "not ShipsNet",
        setup=_write("chips.json", "[1, 2, 3]"),
    ),
    Case(
        "chip file that is not text",
        ["train", *CHIP],
        "not ShipsNet",
        setup=_write("chips.json", b"\xff\xfe\x00garbage"),
    ),
    # values that used to fail only inside Keras or scikit-learn
    Case(
        "monitor that is not a logged metric",
        ["train", "trainer.monitor=val_magic"],
        "trainer.monitor",
    ),
    Case("too few images for the split", ["train", "data.max_per_class=2"], "at least 3"),
    # a typo names the closest key, not Hydra's "+key" (which would add a new one)
    Case("misspelt key", ["train", "trainer.epoch=3"], "did you mean trainer.epochs?"),
    Case("misspelt group", ["train", "modle.blocks=3"], "did you mean model.blocks_per_stage?"),
    # names used as file paths or MLflow names
    Case("empty study name", ["sweep", "sweep=smoke", "sweep.study_name=''"], "study_name"),
    Case("study name with a slash", ["sweep", "sweep=smoke", "sweep.study_name=a/b"], "study_name"),
    Case(
        "study name climbing up", ["sweep", "sweep=smoke", "sweep.study_name=../up"], "study_name"
    ),
    Case("empty experiment name", ["train", "tracking.experiment=''"], "tracking.experiment"),
    Case(
        "experiment name with a slash", ["train", "tracking.experiment=a/b"], "tracking.experiment"
    ),
    Case("hidden sweep experiment", ["sweep", "sweep=smoke", "sweep.experiment=.x"], "experiment"),
    Case(
        "download to an absolute file",
        ["train", "data=eurosat", "data.download.filename=/tmp/x.zip"],
        "data.download.filename",
    ),
    Case(
        "download into the parent folder",
        ["train", "data=eurosat", "data.download.subdir=.."],
        "data.download.subdir",
    ),
    # output locations that are files, under files, or read-only
    Case(
        "outputs folder is a file",
        ["train", *FAST],
        "{tmp}/file",
        setup=_write("file", "x"),
        env={"SATSWEEP_OUTPUTS": "{tmp}/file"},
    ),
    Case(
        "outputs folder under a file",
        ["train", *FAST],
        "{tmp}/file",
        setup=_write("file", "x"),
        env={"SATSWEEP_OUTPUTS": "{tmp}/file/sub"},
    ),
    Case(
        "outputs folder on a read-only file system",
        ["train", *FAST],
        "/proc/satsweep",
        env={"SATSWEEP_OUTPUTS": "/proc/satsweep"},
    ),
    Case(
        "cache folder is a file",
        ["train", *FAST, "paths.cache={tmp}/file", "data.max_per_class=5", "data.image_size=8"],
        "paths.cache",
        setup=_write("file", "x"),
    ),
    Case(
        "cache folder on a read-only file system",
        ["train", *FAST, "paths.cache=/proc/c", "data.max_per_class=5", "data.image_size=8"],
        "paths.cache",
    ),
    # database errors
    Case(
        "storage with an unknown role",
        [
            "compare",
            "x",
            "storage=postgres",
            f"storage.url={PG.replace('postgres@', 'nosuchrole@')}/test",
        ],
        "Optuna storage",
    ),
    Case(
        "storage with an unknown database",
        ["compare", "x", "storage=postgres", f"storage.url={PG}/nosuchdb"],
        "Optuna storage",
    ),
    Case(
        "storage on a closed port",
        ["compare", "x", "storage=postgres", "storage.url=postgresql://postgres@127.0.0.1:9/x"],
        "Optuna storage",
    ),
    Case(
        "storage with an unknown driver",
        ["compare", "x", "storage=postgres", "storage.url=nosuchdb://h/x"],
        "Optuna storage",
    ),
    Case(
        "tracking on an unknown database",
        ["train", f"tracking.uri={PG}/nosuchdb"],
        "tracking store",
    ),
    # silently accepted before
    Case("negative worker count", ["sweep", "sweep=smoke", "--workers", "-1"], "--workers -1"),
    Case("class named twice", ["train", "data.classes=[Beach,Beach]"], "'Beach' twice"),
    Case(
        "positive class named twice", ["train", "data.positive_classes=[Port,Port]"], "'Port' twice"
    ),
    # misleading messages
    Case("comma list in train", ["train", "trainer.epochs=1,2"], "choice(value1,value2)"),
    Case("two sweep files", ["sweep", "sweep=smoke,quick"], "one sweep at a time"),
]


def _fill(text: str, tmp: Path, data: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{data}", str(data))


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(outputs, data_dir, tmp_path, monkeypatch, capfd, caplog, case: Case) -> None:
    if case.setup is not None:
        case.setup(tmp_path, data_dir)
    args = [_fill(a, tmp_path, data_dir) for a in case.args]
    for key, value in case.env.items():
        monkeypatch.setenv(key, _fill(value, tmp_path, data_dir))
    code, stdout, stderr = run_in_process(capfd, caplog, *args)  # what it says, not how it starts
    said = stdout + stderr
    assert "Traceback" not in said, said[-3000:]
    assert "--multirun" not in said
    words = _fill(case.words, tmp_path, data_dir)
    if case.warns:
        assert code == 0, said[-3000:]
        assert words in " ".join(said.split()), said[-3000:]
        return
    assert code == 2, said[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("satsweep: error: "), lines
    assert words in lines[0], lines[0]
