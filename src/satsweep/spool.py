"""Writes to MLflow, as data: applied at once, or spooled while the store is down.

Every change satsweep makes to MLflow is a :class:`Write`. :class:`Tracker`
applies it directly; when the tracking store stays unreachable after retries, a
sweep keeps training and appends the write to a local spool (a JSON-lines file
plus the artifact files) instead, and ``satsweep sync`` applies the spooled
writes later, in order, through the same :func:`apply` function.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFLINE_PREFIX = "offline-"


@dataclass
class Write:
    """One change to a run. ``args`` is JSON; ``blob`` and ``model`` travel as files."""

    op: str
    run_id: str
    args: dict[str, Any] = field(default_factory=dict)
    blob: bytes | None = None
    model: Any = None  # a keras.Model, for op "log_model"


def new_offline_id() -> str:
    return f"{OFFLINE_PREFIX}{uuid.uuid4().hex}"


class Spool:
    """An append-only record of writes for this process, under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

    def record(self, write: Write) -> None:
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
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"op": write.op, "run_id": write.run_id, "args": args}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def spooled_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def read_spool(path: Path, load_model: Callable[[Path], Any]) -> Iterator[Write]:
    files = path.parent / "files"
    for line in path.read_text().splitlines():
        record = json.loads(line)
        args = record["args"]
        blob = (files / args.pop("blob_file")).read_bytes() if "blob_file" in args else None
        model = load_model(files / args.pop("model_file")) if "model_file" in args else None
        yield Write(record["op"], record["run_id"], args, blob, model)


def remove_spool(path: Path) -> None:
    """Delete a replayed spool file and the artifact files it referenced."""
    files = path.parent / "files"
    for line in path.read_text().splitlines():
        args = json.loads(line)["args"]
        for key in ("blob_file", "model_file"):
            if key in args:
                (files / args[key]).unlink(missing_ok=True)
    path.unlink()
    if files.is_dir() and not any(files.iterdir()):
        shutil.rmtree(files)
