"""A study's journal file: checked before Optuna reads it, repaired on request.

Optuna's journal is one JSON operation per line, replayed in order. A process
killed mid-write (a full disk, a power cut) leaves a last line cut short; the
next append then glues a whole operation onto it, and from then on every read
of the file fails with a JSONDecodeError: every later ``sweep`` and ``compare``
of every study in it would die.

- A cut-short last line is a write that never completed: it is dropped at once,
  with a warning (Optuna never applied it).
- A damaged line anywhere else stops the command with one line naming the file
  and the line, and ``satsweep repair-journal FILE``, which keeps every intact
  operation it safely can and saves the original beside it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

from satsweep.errors import UserError

LOG = logging.getLogger(__name__)
# Optuna's JournalOperation codes whose loss changes no id: attributes, params, values
# and states. Losing CREATE_STUDY, DELETE_STUDY or CREATE_TRIAL would shift the ids of
# every later study or trial, so a repair stops at such a line.
_DROPPABLE_OPS = frozenset({2, 3, 5, 6, 7, 8, 9})
_OP_CODE = re.compile(rb'"op_code"\s*:\s*(\d+)')


@dataclass(frozen=True)
class JournalRepair:
    """What ``repair_journal`` did: lines kept, dropped and set aside, and the backup."""

    kept: int
    dropped: tuple[int, ...]  # 1-based numbers of damaged lines left out
    set_aside: int  # lines after a damaged line that could not be left out
    backup: Path


def check_journal(path: Path) -> None:
    """Drop a cut-short last line; refuse a file with a damaged line elsewhere.

    A line being appended by another process looks cut short too: a file that
    looks damaged is read again under Optuna's own journal lock, which writers hold.
    """
    if not path.is_file() or all(map(_intact, path.read_bytes().splitlines(keepends=True))):
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        _check_locked(path)
    finally:
        lock.release()


def _check_locked(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n") and not _intact(lines[-1]):
        _truncate(path, sum(len(line) for line in lines[:-1]))
        LOG.warning(
            "journal %s: its last operation was cut short (a write that never completed): "
            "dropped it",
            path,
        )
        lines = lines[:-1]
    damaged = [number for number, line in enumerate(lines, 1) if not _intact(line)]
    if damaged:
        raise UserError(
            f"the journal {path} is damaged at line {damaged[0]} of {len(lines)}: run "
            f"`satsweep repair-journal {path}` (it keeps every intact operation it can and "
            "saves the original beside it)"
        )


def repair_journal(path: Path) -> JournalRepair:
    """Rewrite ``path`` without its damaged lines, the original saved as ``path.damaged-N``.

    A damaged line whose operation can be left out (an attribute, a param, a
    value) is dropped; at a damaged line that may have created a study or a
    trial, the rest of the file is set aside (it stays in the backup).
    """
    if not path.is_file():
        raise UserError(f"no journal file at {path}: pass the path of an Optuna journal")
    lines = path.read_bytes().splitlines(keepends=True)
    backup = _free_name(path)
    shutil.copy2(path, backup)
    kept: list[bytes] = []
    dropped: list[int] = []
    for number, line in enumerate(lines, 1):
        if _intact(line):
            kept.append(line if line.endswith(b"\n") else line + b"\n")
            continue
        if not _droppable(line) and number < len(lines):
            return _rewrite(path, kept, dropped, len(lines) - number + 1, backup)
        dropped.append(number)
    return _rewrite(path, kept, dropped, 0, backup)


def _rewrite(
    path: Path, kept: list[bytes], dropped: list[int], set_aside: int, backup: Path
) -> JournalRepair:
    temporary = path.with_name(f".{path.name}.repair")
    temporary.write_bytes(b"".join(kept))
    temporary.replace(path)
    return JournalRepair(len(kept), tuple(dropped), set_aside, backup)


def _intact(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError, and bytes that are not UTF-8
        return False


def _droppable(line: bytes) -> bool:
    codes = _OP_CODE.findall(line)
    return len(codes) == 1 and int(codes[0]) in _DROPPABLE_OPS


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


def _free_name(path: Path) -> Path:
    number = 1
    while (candidate := path.with_name(f"{path.name}.damaged-{number}")).exists():
        number += 1
    return candidate
