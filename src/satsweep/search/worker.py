"""A sweep worker: pulls trials from the shared study until the budget is spent.

``satsweep sweep`` starts N of these as child processes, handing them the job it
validated; ``satsweep worker`` runs one from any terminal or machine that
reaches the same storage, composing the job from its own overrides. TensorFlow
stays loaded across trials: each trial only clears the Keras session. After
``sweep.trials_per_process`` trials a worker re-executes itself (same pid, same
log) to free what Keras kept, and loads the job again from its file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from satsweep.data import load_data
from satsweep.errors import UserError
from satsweep.runtime import configure_threads, settle_between_runs
from satsweep.search.attach import Budget, attach, reap_dead_trials
from satsweep.search.crew import LAUNCHER_ENV, worker_command
from satsweep.search.gate import wait_at_gate
from satsweep.search.identity import study_identity
from satsweep.search.job import JOB_ENV, SweepJob, load_job, prepare_job, save_job
from satsweep.search.ledger import RAN_ENV
from satsweep.search.noise import share_repeats
from satsweep.search.objective import LastTrial, TrialObjective, TrialPlan, too_many_failures
from satsweep.search.settings import check_worker_count
from satsweep.search.stopping import StopRequest
from satsweep.search.storage import budget_lock

LOG = logging.getLogger(__name__)
POLL_SECONDS = 2.0
FAILURES_ENV = "SATSWEEP_WORKER_FAILURES_IN_A_ROW"  # across a worker's re-executions


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: done, or due to re-execute itself with the time it has left."""

    ran: int
    recycle: bool
    seconds_left: float | None
    failures_in_a_row: int = 0  # carried into the re-executed process, so it can still stop


def run_final(job: SweepJob, threads: int) -> None:
    """Retrain the sweep's best trial with the final-fit budget (``worker --final-fit``)."""
    from satsweep.search.final_fit import run_final_fit

    configure_threads(threads)
    job = job.on_threads(threads)
    stop = StopRequest()
    stop.install()
    run_final_fit(job, attach(job, offline_ok=launched()), stop)


@dataclass(frozen=True)
class WorkerOptions:
    """How this worker process was asked to run (``satsweep worker``'s options)."""

    threads: int  # TensorFlow threads; 0 for all cores
    worker_index: int | None  # the sampler seed's offset; None for a worker joining by hand
    final_fit: bool  # retrain the best trial instead of running trials
    time_left: float | None  # what is left of sweep.timeout, for a re-executed worker


def worker_job(overrides: Sequence[str]) -> SweepJob:
    """The job this worker runs: its launcher's file if it has one, else composed here."""
    if path := os.environ.get(JOB_ENV):
        if overrides:
            raise UserError(
                f"this worker runs the sweep in {path} (${JOB_ENV}): it takes no overrides "
                f"({' '.join(overrides)}); unset {JOB_ENV} to join with your own"
            )
        return load_job(Path(path))
    return prepare_job(overrides)


def check_joinable(job: SweepJob, options: WorkerOptions) -> None:
    """A KerasTuner study is searched by its launcher's one worker; others may not join.

    The final fit trains one config and searches nothing: any backend's sweep has one.
    """
    if options.final_fit:
        return
    try:
        check_worker_count(job.settings.backend, None if options.worker_index is None else 1)
    except ValueError as error:
        raise UserError(str(error)) from error


def launched() -> bool:
    """Started by ``satsweep sweep`` (still its child): it should end with its launcher."""
    return os.environ.get(LAUNCHER_ENV) == str(os.getppid())


def serve(job: SweepJob, options: WorkerOptions) -> int:
    """Run the worker's trials (or the final fit); re-executes itself when due.

    Returns the number of trials this worker ran, over all its re-executions.
    """
    if options.final_fit:
        run_final(job, options.threads)
        return 0
    outcome = run_worker(job, options)
    ran = int(os.environ.get(RAN_ENV, "0")) + outcome.ran
    if outcome.recycle:
        os.environ[RAN_ENV] = str(ran)
        os.environ[FAILURES_ENV] = str(outcome.failures_in_a_row)
        reexecute(job, options, outcome.seconds_left)
    return ran


def reexecute(job: SweepJob, options: WorkerOptions, seconds_left: float | None) -> None:
    """Replace this worker by a fresh one (same pid, same log), freeing what Keras kept.

    The fresh process loads the job from its file: nothing is composed again.
    """
    if JOB_ENV not in os.environ:  # a worker joined by hand saves the job it composed
        where = Path(job.base.paths.outputs) / "sweeps" / job.settings.study_name
        os.environ.update(save_job(job, where / f"worker-{os.getpid()}.job.json").environment())
    command = worker_command("--threads", str(options.threads))
    if options.worker_index is not None:
        command += ["--worker-index", str(options.worker_index)]
    if seconds_left is not None:
        command += ["--time-left", f"{max(seconds_left, 1.0):.1f}"]
    LOG.info("re-executing the worker (sweep.trials_per_process reached)")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def run_worker(job: SweepJob, options: WorkerOptions) -> WorkerExit:
    """Run trials until the study has ``n_trials`` finished ones, or ``trials_per_process``."""
    configure_threads(options.threads)
    job = job.on_threads(options.threads)
    wait_at_gate()  # TensorFlow is imported: wait for the launcher's study and floor
    stop = StopRequest()
    stop.install()  # SIGINT and SIGTERM fail the running trial and end the worker
    # the launcher checked the store and the study's identity; a worker joining by hand checks
    # both itself, and a later outage is spooled through
    identity = None if launched() else study_identity(job, load_data(job.base))
    attached = attach(
        job, options.worker_index, identity, offline_ok=launched() or RAN_ENV in os.environ
    )
    study = attached.study
    settings = job.settings
    objective = TrialObjective(job, attached.tracker, attached.parent_run_id, stop)
    seconds = options.time_left if options.time_left is not None else settings.timeout
    budget = Budget(settings.n_trials, time.monotonic() + seconds if seconds else None)
    if settings.backend == "kerastuner":
        from satsweep.search.kerastuner import run_kerastuner  # imports KerasTuner

        ran, recycle = run_kerastuner(job, study, objective, budget)
        return WorkerExit(ran, recycle, budget.seconds_left())
    ran = 0
    # a re-executed worker goes on counting: otherwise trials that all fail, with
    # sweep.max_failures above sweep.trials_per_process, would never stop it
    failures_in_a_row = int(os.environ.get(FAILURES_ENV, "0"))
    settle_between_runs()  # the start-up's objects, frozen once; then after each trial
    while not budget.expired():
        stop.check()
        with contextlib.ExitStack() as held:
            held.enter_context(budget_lock(job.base.storage, settings.study_name))
            reap_dead_trials(job, study, attached.storage, attached.tracker)
            left, running = budget.remaining(study)
            if left <= 0:
                break
            if settings.trials_per_process and ran >= settings.trials_per_process:
                return WorkerExit(ran, True, budget.seconds_left(), failures_in_a_row)
            if left <= running:  # the rest is running elsewhere; wait in case one fails
                held.close()
                time.sleep(POLL_SECONDS)
                continue
            ended = LastTrial()
            study.optimize(
                objective.for_trial(TrialPlan(), on_start=held.close),
                n_trials=1,
                catch=(Exception,),
                callbacks=[ended],
                gc_after_trial=False,  # settle_between_runs, below, collects
            )
        settle_between_runs()  # outside the lock; the next trial then collects only its own
        ran += 1
        failures_in_a_row = failures_in_a_row + 1 if ended.failed else 0
        if failures_in_a_row >= settings.max_failures:
            raise too_many_failures(failures_in_a_row, ended.error)
    left, running = budget.remaining(study)
    if left <= 0 and not running and settings.final_fit.enabled:
        share_repeats(job, attached, stop)  # side by side with the other workers' repeats
    if not launched():  # no launcher to write the sweep's record: the last worker does
        from satsweep.search.closing import close_without_launcher

        close_without_launcher(job, attached, stop)
    return WorkerExit(ran, False, None)
