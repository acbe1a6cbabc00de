"""Optuna study storage: a journal file locally, any RDB URL (PostgreSQL) to scale out.

Also the *budget lock*: workers hold it while they count finished trials and ask
for a new one, so that parallel workers never run more than ``n_trials``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError

from satsweep.errors import UserError
from satsweep.locks import is_journal, local_file, store_lock
from satsweep.redact import redact
from satsweep.schema import StorageConfig
from satsweep.search.journal import check_journal
from satsweep.search.ledger import WORKER_ATTR

LOG = logging.getLogger(__name__)


class RetryAndReport(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a stale trial, telling satsweep first (to close its MLflow run).

    Optuna fails stale trials itself, inside ``study.optimize`` as well as when asked,
    so this hook is the one place that sees every one of them.
    """

    def __init__(self, max_retry: int, on_stale: Callable[[FrozenTrial], None]) -> None:
        with warnings.catch_warnings():  # used on purpose: its interface is pinned by tests
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.on_stale(trial)
        super().__call__(study, trial)


def open_storage(
    cfg: StorageConfig, on_stale: Callable[[FrozenTrial], None] = lambda trial: None
) -> BaseStorage:
    """The study storage; ``on_stale`` hears of each trial whose worker stopped beating."""
    local = local_file(cfg.url)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
    if is_journal(cfg.url):
        check_journal(Path(cfg.url))
        return JournalStorage(JournalFileBackend(cfg.url))
    try:
        with store_lock(cfg.url, "schema"):  # one process at a time creates the tables
            storage = RDBStorage(
                cfg.url,
                heartbeat_interval=cfg.heartbeat_interval,
                grace_period=cfg.grace_period,
                heartbeat_stale_trial_callback=RetryAndReport(cfg.failed_trial_max_retry, on_stale),
                engine_kwargs={"pool_pre_ping": True},  # a connection the server dropped is new
            )
            retry_connects(storage.engine, cfg.reconnect_seconds)
            return storage
    except (SQLAlchemyError, ImportError, ValueError) as error:  # role, database, driver, URL
        reason = " ".join(str(getattr(error, "orig", None) or error).split())[:300]
        raise UserError(
            f"cannot open the Optuna storage {redact(cfg.url)} ({reason}): "
            "check storage.url (user, password, host, database) or $SATSWEEP_OPTUNA_STORAGE"
        ) from error


def retry_connects(engine: Engine, seconds: float) -> None:
    """New connections to a database that refuses them are retried with backoff for ``seconds``.

    A restart or fail-over of PostgreSQL refuses connections for a few seconds;
    without this every process of the sweep (the launcher too) would die of it.
    """
    refused = engine.dialect.loaded_dbapi.OperationalError

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        deadline, delay = time.monotonic() + seconds, 0.25
        while True:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except refused as error:
                if time.monotonic() + delay > deadline:
                    raise
                LOG.warning("the study's database refused a connection (%s): retrying", error)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)


def budget_lock(cfg: StorageConfig, study_name: str) -> AbstractContextManager[None]:
    """An exclusive lock per study, across processes (and hosts, on PostgreSQL)."""
    return store_lock(cfg.url, f"{study_name}.budget")


def worker_identity() -> str:
    """``host:pid`` of this process, so a dead worker's trials can be found and failed."""
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_orphaned_trials(
    study: optuna.Study, storage: BaseStorage, retry: RetryAndReport
) -> list[optuna.trial.FrozenTrial]:
    """Fail RUNNING trials whose worker on this host is gone, and hand them to ``retry``.

    RDB storage does this itself through heartbeats and the same ``RetryAndReport``;
    a journal file has no heartbeat, so a SIGKILLed worker's trial would stay
    RUNNING forever. One retry path for both means ``failed_trial_max_retry``
    holds on both. Returns the trials that were failed.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    orphaned = []
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if owner_gone(str(trial.user_attrs.get(WORKER_ATTR, ""))):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            retry(study, trial)
            orphaned.append(trial)
    return orphaned


def on_this_host(identity: str) -> bool:
    """Whether the process ``host:pid`` (see :func:`worker_identity`) runs on this host."""
    return identity.rpartition(":")[0] == socket.gethostname()


def owner_gone(identity: str) -> bool:
    """Whether the process ``host:pid`` (see :func:`worker_identity`) has ended on this host.

    A process on another host cannot be seen from here: it counts as alive.
    """
    pid = identity.rpartition(":")[2]
    return on_this_host(identity) and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")
