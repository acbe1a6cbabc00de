"""A sweep worker: pulls trials from the shared study until the budget is spent.

``satsweep sweep`` starts N of these as child processes; ``satsweep worker`` runs
one from any terminal or machine that reaches the same storage. TensorFlow stays
loaded across trials: each trial only clears the Keras session.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from satsweep.runtime import configure_threads
from satsweep.search.attach import Budget, attach, reap_dead_trials
from satsweep.search.job import SweepJob
from satsweep.search.objective import TrialObjective, too_many_failures
from satsweep.search.stopping import StopRequest
from satsweep.search.storage import budget_lock

LOG = logging.getLogger(__name__)
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: done, or due to re-execute itself with the time it has left."""

    ran: int
    recycle: bool
    seconds_left: float | None


def run_final(job: SweepJob, threads: int) -> None:
    """Retrain the sweep's best trial with the final-fit budget (``worker --final-fit``)."""
    from satsweep.search.final_fit import run_final_fit

    configure_threads(threads)
    stop = StopRequest()
    stop.install()
    run_final_fit(job, attach(job), stop)


def run_worker(job: SweepJob, threads: int, worker_index: int | None) -> WorkerExit:
    """Run trials until the study has ``n_trials`` finished ones, or ``trials_per_process``."""
    configure_threads(threads)
    stop = StopRequest()
    stop.install()  # SIGINT and SIGTERM fail the running trial and end the worker
    attached = attach(job, worker_index)
    study = attached.study
    settings = job.settings
    objective = TrialObjective(job, attached.tracker, attached.parent_run_id, stop)
    budget = Budget(
        settings.n_trials, time.monotonic() + settings.timeout if settings.timeout else None
    )
    if settings.backend == "kerastuner":
        from satsweep.search.kerastuner import run_kerastuner  # imports KerasTuner

        ran, recycle = run_kerastuner(job, study, objective, budget)
        return WorkerExit(ran, recycle, budget.seconds_left())
    ran = failures_in_a_row = 0
    while not budget.expired():
        stop.check()
        with contextlib.ExitStack() as held:
            held.enter_context(budget_lock(job.base.storage, settings.study_name))
            reap_dead_trials(job, study, attached.storage, attached.tracker)
            left, running = budget.remaining(study)
            if left <= 0:
                break
            if settings.trials_per_process and ran >= settings.trials_per_process:
                return WorkerExit(ran, True, budget.seconds_left())
            if left <= running:  # the rest is running elsewhere; wait in case one fails
                held.close()
                time.sleep(POLL_SECONDS)
                continue
            objective.on_start = held.close  # the trial is asked: others may count it now
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        ran += 1
        failures_in_a_row = failures_in_a_row + 1 if objective.last_state == "failed" else 0
        if failures_in_a_row >= settings.max_failures:
            raise too_many_failures(failures_in_a_row, objective.last_error)
    return WorkerExit(ran, False, None)
