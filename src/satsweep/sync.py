"""``satsweep sync``: upload what a sweep spooled while MLflow was unreachable.

Spooled writes are applied in their original order through the same function
that applies them live. Runs created offline get their real MLflow ids, and the
Optuna trials that point at them are re-linked. Progress is saved after every
write, so an interrupted sync resumes without logging anything twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from satsweep.config import load_environment
from satsweep.errors import UserError
from satsweep.files import atomic_file
from satsweep.search.attach import spool_folder
from satsweep.search.ledger import RELINKED_ATTR, RUN_ATTR
from satsweep.search.storage import open_storage
from satsweep.spool import (
    OFFLINE_PREFIX,
    Unreadable,
    Write,
    read_spool,
    remove_spool,
    take_spools,
)
from satsweep.tracking import PARENT_TAG, Tracker, apply, is_transient

LOG = logging.getLogger(__name__)


@dataclass
class SyncState:
    """Offline run id -> MLflow run id, and writes done per spool file (``state.json``)."""

    path: Path
    ids: dict[str, str]
    done: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """What an interrupted sync already replayed, so running it again does not write twice."""
        try:
            data = json.loads(path.read_text()) if path.is_file() else {}
            ids, done = data.get("ids", {}), data.get("done", {})
            if not (isinstance(ids, dict) and isinstance(done, dict)):
                raise ValueError("ids and done are not mappings")
        except (ValueError, AttributeError, UnicodeDecodeError) as error:
            raise UserError(
                f"the sync state {path} is damaged ({error}): move it away to replay every "
                "spooled write again (writes an earlier sync made would be made twice)"
            ) from error
        return cls(path, ids, done)

    def save(self) -> None:
        """Remember the replayed writes and the offline-to-MLflow run ids (all or nothing)."""
        with atomic_file(self.path) as stream:
            stream.write(json.dumps({"ids": self.ids, "done": self.done}).encode())


@dataclass(frozen=True)
class SyncReport:
    """What one ``satsweep sync`` uploaded, for its summary line."""

    files: int
    writes: int
    runs_created: int
    trials_relinked: int
    set_aside: int  # writes that can never be made, kept in ``rejected`` with the reason
    rejected: Path


def _load_model(path: Path) -> object:
    import keras

    return keras.saving.load_model(path, safe_mode=True)


def _replay(tracker: Tracker, write: Write, state: SyncState) -> bool:
    """Apply one spooled write; returns whether it created a run."""
    if write.op == "create_run":
        tags = dict(write.args["tags"])
        if tags.get(PARENT_TAG, "").startswith(OFFLINE_PREFIX):
            tags[PARENT_TAG] = state.ids[tags[PARENT_TAG]]
        offline_id = write.run_id
        created = apply(tracker, Write("create_run", "", {**write.args, "tags": tags}))
        state.ids[offline_id] = str(created)
        return True
    write.run_id = state.ids.get(write.run_id, write.run_id)
    apply(tracker, write)
    return False


def _relink_trials(storage_overrides: Sequence[str], ids: dict[str, str]) -> int:
    """Record on each study which of its trials' offline run ids became which MLflow runs."""
    storage = open_storage(load_environment(storage_overrides).storage)
    relinked = 0
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)  # listed now
        offline = {str(t.user_attrs.get(RUN_ATTR, "")) for t in study.get_trials(deepcopy=False)}
        links = {run: ids[run] for run in offline if run in ids}
        if links:
            study.set_user_attr(RELINKED_ATTR, {**study.user_attrs.get(RELINKED_ATTR, {}), **links})
            relinked += len(links)
    return relinked


def sync(overrides: Sequence[str]) -> SyncReport:
    """Replay the spooled writes into the MLflow store and re-link the trials of offline runs."""
    cfg = load_environment(overrides)
    tracker = Tracker(cfg.tracking)  # no spool: a failure now stops the sync
    tracker.check_reachable()
    folder = spool_folder(cfg)
    state = SyncState.load(folder / "state.json")
    files = take_spools(folder) if folder.is_dir() else []
    rejected = folder / REJECTED
    writes = created = aside = 0
    for path in files:
        for index, write in read_spool(path, _load_model):
            if index < state.done.get(path.name, 0):
                continue
            why = write.reason if isinstance(write, Unreadable) else None
            if isinstance(write, Write):
                try:
                    created += _replay(tracker, write, state)
                    writes += 1
                except Exception as error:
                    why = _refused(error)
            if why is not None:  # one bad write must not hold back the ones behind it
                _set_aside(rejected, path, index, why)
                aside += 1
            state.done[path.name] = index + 1
            state.save()
        remove_spool(path)
        state.done.pop(path.name, None)
        state.save()
    relinked = _relink_trials(overrides, state.ids) if state.ids else 0
    return SyncReport(len(files), writes, created, relinked, aside, rejected)


# Beside the spool files, not among them: what sync could not deliver, and why.
REJECTED = "rejected/writes.jsonl"


def _refused(error: Exception) -> str:
    """Why the store refused a write; an outage stops the sync (it resumes where it was)."""
    if is_transient(error):
        raise UserError(
            f"the MLflow store went away during the sync ({error}): start it and run "
            "satsweep sync again; it goes on where it stopped"
        ) from error
    return f"{type(error).__name__}: {' '.join(str(error).split())[:500]}"


def _set_aside(rejected: Path, spool: Path, index: int, reason: str) -> None:
    line = spool.read_text(errors="replace").splitlines()[index]
    LOG.warning("set aside line %d of %s: %s", index + 1, spool.name, reason)
    rejected.parent.mkdir(exist_ok=True)
    with open(rejected, "a") as handle:
        handle.write(
            json.dumps({"spool": spool.name, "line": index + 1, "reason": reason, "write": line})
            + "\n"
        )
