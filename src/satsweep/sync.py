"""``satsweep sync``: upload what a sweep spooled while MLflow was unreachable.

Spooled writes are applied in their original order through the same function
that applies them live. Runs created offline get their real MLflow ids, and the
Optuna trials that point at them are re-linked. Progress is saved after every
write, so an interrupted sync resumes without logging anything twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from satsweep.config import load_environment
from satsweep.search.attach import spool_folder
from satsweep.search.ledger import RELINKED_ATTR, RUN_ATTR
from satsweep.search.storage import open_storage
from satsweep.spool import OFFLINE_PREFIX, Write, read_spool, remove_spool, take_spools
from satsweep.tracking import PARENT_TAG, Tracker, apply


@dataclass
class SyncState:
    """Offline run id -> MLflow run id, and writes done per spool file (``state.json``)."""

    path: Path
    ids: dict[str, str]
    done: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """What an interrupted sync already replayed, so running it again does not write twice."""
        data = json.loads(path.read_text()) if path.is_file() else {}
        return cls(path, data.get("ids", {}), data.get("done", {}))

    def save(self) -> None:
        """Remember the replayed writes and the offline-to-MLflow run ids."""
        self.path.write_text(json.dumps({"ids": self.ids, "done": self.done}))


@dataclass(frozen=True)
class SyncReport:
    """What one ``satsweep sync`` uploaded, for its summary line."""

    files: int
    writes: int
    runs_created: int
    trials_relinked: int


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
    writes = created = 0
    for path in files:
        for index, write in read_spool(path, _load_model):
            if index < state.done.get(path.name, 0):
                continue
            created += _replay(tracker, write, state)
            writes += 1
            state.done[path.name] = index + 1
            state.save()
        remove_spool(path)
        state.done.pop(path.name, None)
        state.save()
    relinked = _relink_trials(overrides, state.ids) if state.ids else 0
    return SyncReport(len(files), writes, created, relinked)
