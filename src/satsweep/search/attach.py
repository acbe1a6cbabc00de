"""How a process attaches to a sweep: its study, parent MLflow run and budget.

The launcher and every worker attach the same way, under the study's budget
lock, so the first one creates the study and the parent run and the others (and
reruns) find them. Nothing here imports TensorFlow: the launcher never needs it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from satsweep.errors import UserError
from satsweep.locks import is_journal
from satsweep.schema import Environment, RunConfig
from satsweep.search.identity import check_identity
from satsweep.search.job import SweepJob
from satsweep.search.ledger import (
    BACKEND_ATTR,
    EXPERIMENT_ATTR,
    FINISHED_STATES,
    OBJECTIVES_ATTR,
    PARENT_ATTR,
)
from satsweep.search.runs import (
    close_orphaned_run,
    close_runs_of_ended_trials,
    ensure_parent_run,
)
from satsweep.search.storage import (
    RetryAndReport,
    budget_lock,
    fail_orphaned_trials,
    open_storage,
)
from satsweep.search.study import open_study
from satsweep.tracking import Tracker

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """How many finished (complete or pruned) trials the study still needs."""

    n_trials: int | None
    deadline: float | None

    def remaining(self, study: optuna.Study) -> tuple[int, int]:
        """(trials still to finish, trials running now); unbounded counts as a large number."""
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED_STATES for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        left = (self.n_trials - finished) if self.n_trials is not None else 1 << 30
        return left, running

    def expired(self) -> bool:
        """Whether ``sweep.timeout`` has run out: a worker then asks for no new trial."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def seconds_left(self) -> float | None:
        """What is left of ``sweep.timeout``, handed on to a re-executed worker."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class Attached:
    """A process's handles on a sweep: its study, storage, MLflow store and parent run."""

    study: optuna.Study
    storage: BaseStorage
    tracker: Tracker
    parent_run_id: str


def attach(
    job: SweepJob,
    worker_index: int | None = 0,
    identity: dict[str, Any] | None = None,
    offline_ok: bool = False,
) -> Attached:
    """Open (or create) the study and the parent MLflow run, under the budget lock.

    The launcher passes the sweep's ``identity`` (data and recipe): a study that
    searched something else is refused before anything of it is touched. A worker
    of a running sweep (``offline_ok``: one its launcher started, or one that
    re-executed itself) attaches while the tracking store is down, and spools.
    """
    tracker = Tracker(job.base.tracking, spool=spool_folder(job.base))
    online = _reachable(tracker, offline_ok)
    storage = open_storage(job.base.storage, lambda trial: close_orphaned_run(tracker, trial))
    study = open_study(job.settings, job.space, storage, worker_index)
    with budget_lock(job.base.storage, job.settings.study_name):
        _check_backend(job, study)
        if identity is not None:
            check_identity(study, identity)
        reap_dead_trials(job, study, storage, tracker)
        parent_run_id = (
            _attach_online(job, study, tracker) if online else _attach_offline(job, study, tracker)
        )
        study.set_user_attr(OBJECTIVES_ATTR, job.settings.objectives)
    return Attached(study, storage, tracker, parent_run_id)


def _reachable(tracker: Tracker, offline_ok: bool) -> bool:
    try:
        tracker.check_reachable()
    except UserError as error:
        if not offline_ok:
            raise
        LOG.warning("%s; this worker goes on and spools its runs", error)
        return False
    return True


def _attach_online(job: SweepJob, study: optuna.Study, tracker: Tracker) -> str:
    parent_run_id = ensure_parent_run(job, study, tracker)
    experiment_id = tracker.experiment_id(job.settings.experiment)
    study.set_user_attr(EXPERIMENT_ATTR, experiment_id)
    close_runs_of_ended_trials(tracker, study, experiment_id, parent_run_id)
    return parent_run_id


def _attach_offline(job: SweepJob, study: optuna.Study, tracker: Tracker) -> str:
    """The parent run and experiment as the study recorded them when the store was up."""
    parent_run_id = study.user_attrs.get(PARENT_ATTR)
    experiment_id = study.user_attrs.get(EXPERIMENT_ATTR)
    if not parent_run_id or not experiment_id:
        raise UserError(
            f"the MLflow tracking store {job.base.tracking.uri} is down and study "
            f"{job.settings.study_name!r} has no parent run yet: start the store, then the sweep"
        )
    tracker.remember_experiment(job.settings.experiment, str(experiment_id))
    return str(parent_run_id)


def _check_backend(job: SweepJob, study: optuna.Study) -> None:
    """A study is searched by one backend: mixing them would corrupt both records."""
    backend = job.settings.backend
    stored = study.user_attrs.get(BACKEND_ATTR, backend)
    if stored != backend:
        raise UserError(
            f"study {job.settings.study_name!r} was searched with sweep.backend={stored}: "
            f"resume it with that backend, or choose another sweep.study_name"
        )
    study.set_user_attr(BACKEND_ATTR, backend)


def spool_folder(cfg: RunConfig | Environment) -> Path:
    """Where a sweep keeps MLflow writes while the tracking store is unreachable."""
    return Path(cfg.paths.outputs) / "spool"


def reap_dead_trials(
    job: SweepJob, study: optuna.Study, storage: BaseStorage, tracker: Tracker
) -> None:
    """Fail the trials of workers that died (SIGKILL, lost node), so they are run again.

    Their MLflow runs are closed as FAILED rather than left RUNNING forever.
    """
    if is_journal(job.base.storage.url):
        retry = RetryAndReport(
            job.base.storage.failed_trial_max_retry, lambda t: close_orphaned_run(tracker, t)
        )
        for trial in fail_orphaned_trials(study, storage, retry):
            LOG.warning("trial %d was left running by a dead worker: failed", trial.number)
    elif job.base.storage.heartbeat_interval:
        optuna.storages.fail_stale_trials(study)  # open_storage's hook closes their runs
