"""Writes to MLflow, as data: applied at once, or spooled while the store is down.

Every change satsweep makes to MLflow is a :class:`Write`. :class:`Tracker`
applies it directly; when the tracking store stays unreachable after retries, a
sweep keeps training and appends the write to a local spool (a JSON-lines file
plus the artifact files) instead, and ``satsweep sync`` applies the spooled
writes later, in order, through the same :func:`apply` function.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satsweep.locks import file_lock

OFFLINE_PREFIX = "offline-"
LOCK_NAME = "spool.lock"
TAKEN_SUFFIX = ".syncing"  # a spool file that sync has taken from its writer
FILE_KEYS = ("blob_file", "model_file")
LOG = logging.getLogger(__name__)


@dataclass
class Write:
    """One change to a run. ``args`` is JSON; ``blob`` and ``model`` travel as files."""

    op: str
    run_id: str
    args: dict[str, Any] = field(default_factory=dict)
    blob: bytes | None = None
    model: Any = None  # a keras.Model, for op "log_model"


def new_offline_id() -> str:
    """A run id for a run created while MLflow is unreachable; ``sync`` maps it to a real one."""
    return f"{OFFLINE_PREFIX}{uuid.uuid4().hex}"


class Spool:
    """An append-only record of writes for this process, under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

    def record(self, write: Write) -> None:
        """Append one write to the spool, under the lock ``sync`` also takes."""
        files = self.folder / "files"
        files.mkdir(parents=True, exist_ok=True)
        args = dict(write.args)
        if write.blob is not None:
            blob_path = files / f"{uuid.uuid4().hex}.bin"
            blob_path.write_bytes(write.blob)
            args["blob_file"] = blob_path.name
        if write.model is not None:
            model_path = files / f"{uuid.uuid4().hex}.keras"
            write.model.save(model_path)
            args["model_file"] = model_path.name
        line = json.dumps({"op": write.op, "run_id": write.run_id, "args": args}) + "\n"
        with spool_lock(self.folder), open(self.path, "a") as handle:
            handle.write(line)  # a whole line, or (if killed) a broken one sync skips
            handle.flush()
            os.fsync(handle.fileno())


def spool_lock(folder: Path) -> AbstractContextManager[None]:
    """Writers append, and ``sync`` takes files away, only while holding this lock."""
    return file_lock(folder / LOCK_NAME)


def take_spools(folder: Path) -> list[Path]:
    """The spool files to replay: ones a past sync took, then the current ones.

    A current file is renamed under the lock, so a writer's next line starts a new
    file rather than landing in one that sync is replaying and will delete.
    """
    taken = sorted(folder.glob(f"*{TAKEN_SUFFIX}"), key=lambda p: p.stat().st_mtime)
    with spool_lock(folder):
        for path in sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime):
            target = path.with_name(path.name + TAKEN_SUFFIX)
            if not target.exists():
                path.rename(target)
                taken.append(target)
    return taken


def _spooled_file(files: Path, name: object) -> Path:
    """``files/name``, refusing any name that points elsewhere (``../x``, ``/etc/x``)."""
    path = (files / str(name)).resolve()
    if path.parent != files.resolve():
        raise ValueError(f"file {name!r} is outside {files}")
    return path


def _parse(line: str, files: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """One spooled line: its record and the files it names (checked to be in ``files``)."""
    record = json.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise ValueError("not a spooled write")
    named = {
        key: _spooled_file(files, record["args"][key]) for key in FILE_KEYS if key in record["args"]
    }
    return record, named


@dataclass(frozen=True)
class Unreadable:
    """A spooled line that cannot become a write: broken, crafted, or naming a bad file."""

    line: str
    reason: str


def read_spool(
    path: Path, load_model: Callable[[Path], Any]
) -> Iterator[tuple[int, Write | Unreadable]]:
    """(line number, write) for every line; a line that cannot be read comes as Unreadable."""
    files = path.parent / "files"
    for index, line in enumerate(path.read_text(errors="replace").splitlines()):
        try:
            record, named = _parse(line, files)
            blob = named["blob_file"].read_bytes() if "blob_file" in named else None
            args = {k: v for k, v in record["args"].items() if k not in FILE_KEYS}
            write = Write(str(record["op"]), str(record["run_id"]), args, blob)
        except (ValueError, KeyError, TypeError, OSError) as error:  # JSONDecodeError too
            yield index, Unreadable(line, f"{type(error).__name__}: {error}")
            continue
        try:  # Keras' safe mode refuses a model whose code would run on load
            write.model = load_model(named["model_file"]) if "model_file" in named else None
        except Exception as error:
            yield index, Unreadable(line, f"its model cannot be loaded safely: {error}")
            continue
        yield index, write


def remove_spool(path: Path) -> None:
    """Delete a replayed spool file and the files its sound lines named."""
    files = path.parent / "files"
    for line in path.read_text(errors="replace").splitlines():
        try:
            _, named = _parse(line, files)
        except (ValueError, KeyError, TypeError):
            continue
        for file in named.values():
            file.unlink(missing_ok=True)
    path.unlink()
