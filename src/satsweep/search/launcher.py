"""``satsweep sweep``: set up the study for its waiting workers, then watch them.

Workers are separate processes (``satsweep worker``, started by ``crew``), each
keeping TensorFlow loaded across its trials; they share the study through its
storage and never wait for each other. This process only shows progress, and
when the workers are done (or interrupted) writes the sweep's record to the
parent MLflow run.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from satsweep.data import Dataset
from satsweep.exploration import log_dataset_report
from satsweep.links import announce, runs_link, runs_view
from satsweep.search.attach import Attached, Budget, attach
from satsweep.search.crew import Crew, FinalFitProcess, Starter, Worker
from satsweep.search.identity import study_identity
from satsweep.search.job import SweepJob
from satsweep.search.ledger import FAILURE_ATTR, LAUNCHER_ATTR
from satsweep.search.progress import ProgressView, Snapshot, snapshot
from satsweep.search.record import finalize, record_floor_once
from satsweep.search.settings import result_metric, test_metric
from satsweep.search.storage import worker_identity
from satsweep.tracking import Tracker

LOG = logging.getLogger(__name__)
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 120


def _say_if_complete(job: SweepJob, attached: Attached) -> None:
    """A finished study runs no trial: say so, and how to extend it."""
    n_trials = job.settings.n_trials
    if n_trials is None or Budget(n_trials, None).remaining(attached.study)[0] > 0:
        return
    LOG.info(
        "study %s already has its %d finished trials: no new trial runs. To extend it, "
        "raise sweep.n_trials (e.g. make sweep ARGS=sweep.n_trials=%d)",
        job.settings.study_name,
        n_trials,
        2 * n_trials,
    )


def _save_runs_view(job: SweepJob, tracker: Tracker) -> str:
    """The runs table sorted by the objective, with the swept params: the link that opens it."""
    settings = job.settings
    experiment_id = tracker.experiment_id(settings.experiment)
    results = [result_metric(name) for name in settings.objectives]
    view = runs_view(
        results[0],
        settings.directions[0] == "minimize",
        [*results, test_metric(settings.objectives[0]), "epochs_run"],
        [*job.space_params, *(k for p in settings.conditional.values() for k in p)],
    )
    tracker.set_experiment_tags(experiment_id, view)
    return runs_link(job.base.tracking, experiment_id, view=True)


@dataclass
class Restarter:
    """Replaces workers killed by a signal (SIGKILL, the OOM killer) while trials are left.

    Their trials are failed and retried (up to ``storage.failed_trial_max_retry``) by
    the next worker that asks for a trial; after ``sweep.max_failures`` restarts a
    sweep gives up, so a worker that keeps dying cannot loop forever.
    """

    job: SweepJob
    attached: Attached
    start: Callable[[int], Worker]
    left: int

    def __call__(self, processes: list[Worker]) -> bool:
        """Restart killed workers; returns whether any was restarted."""
        restarted = False
        for index, (process, log) in enumerate(processes):
            code = process.returncode
            if code is None or code >= 0 or self.left <= 0 or self._budget_spent():
                continue
            LOG.warning(
                "worker %d was killed by signal %d (log: %s): starting another",
                process.pid,
                -code,
                log,
            )
            processes[index] = self.start(index)
            self.left -= 1
            restarted = True
        return restarted

    def _budget_spent(self) -> bool:
        return Budget(self.job.settings.n_trials, None).remaining(self.attached.study)[0] <= 0


@dataclass(frozen=True)
class SweepOutcome:
    """How one invocation of a sweep ended; the CLI turns ``code`` into its exit status."""

    code: int  # 0 done, 1 the final fit failed, 2 workers failed, 130 interrupted
    leaderboard: pd.DataFrame
    link: str  # the sweep's runs table in the MLflow UI


def launch(job: SweepJob, dataset: Dataset, crew: Crew, view: ProgressView) -> SweepOutcome:
    """Run the sweep to its budget with ``crew``'s workers, then its final fit.

    ``crew`` was started as soon as the job was composed (``Crew.start``) and waits
    at its start gate; ``dataset`` is the sweep's, loaded meanwhile. ``view``
    shows the progress while the workers run (this process trains nothing).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # workers' logs keep Optuna's lines
    starter = crew.starter
    LOG.info(
        "sweep %s: %d worker(s), logs in %s", job.settings.study_name, starter.workers, starter.logs
    )
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    # a shell starts background jobs with SIGINT ignored; `kill -INT` must still stop us
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # a notebook's kernel goes on after the sweep, with its own handlers
        attached = _set_up(job, dataset, crew)
        processes = crew.processes
        link = _save_runs_view(job, attached.tracker)
        _say_if_complete(job, attached)
        announce(f"sweep {job.settings.study_name}: its runs", link)
        # the report is written while the first trials start, not before them
        report = partial(_log_dataset_report_once, attached, dataset)
        _failing_the_parent(attached, report, processes)
        supervisor = _Supervisor(starter, attached, view)
        code, table = _run_workers(supervisor, link, processes, dataset)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return SweepOutcome(code, table, link)


def _set_up(job: SweepJob, dataset: Dataset, crew: Crew) -> Attached:
    """The study, parent run and floor, made while the crew imports TensorFlow.

    The workers wait at their start gate until all of it exists. A set-up that
    fails dismisses them before they have attached: they created nothing.
    """
    try:
        # creates the study and parent run once, before the workers
        attached = attach(job, identity=study_identity(job, dataset))
        attached.study.set_user_attr(LAUNCHER_ATTR, worker_identity())  # workers leave it to us
        _failing_the_parent(attached, partial(record_floor_once, job, attached, dataset))
    except BaseException:
        crew.dismiss()
        raise
    crew.let_in()
    return attached


def _failing_the_parent(
    attached: Attached, step: Callable[[], None], processes: Sequence[Worker] = ()
) -> None:
    """Run one start-up step; if it fails, stop the workers and close the parent run FAILED.

    Nothing is left RUNNING by a sweep that could not start.
    """
    try:
        step()
    except BaseException as error:
        if processes:
            _stop(list(processes))
        interrupted = isinstance(error, KeyboardInterrupt)
        attached.tracker.end_run(attached.parent_run_id, "KILLED" if interrupted else "FAILED")
        raise


@dataclass(frozen=True)
class _Supervisor:
    """The launcher's hold on its running workers: the study they share, and their progress."""

    starter: Starter
    attached: Attached
    view: ProgressView

    @property
    def job(self) -> SweepJob:
        return self.starter.job

    def watch(
        self,
        processes: list[Worker],
        title: str,
        started: float,
        restart: Restarter | None,
        each_poll: Callable[[], None] = lambda: None,
    ) -> None:
        """Show the study's progress until every process has exited (restarting killed ones).

        Without a restarter the processes are the final fit's, whose epochs are shown.
        ``each_poll`` runs at every poll (e.g. to start the final fit's process early).
        """
        settings = self.job.settings

        def now() -> Snapshot:
            return snapshot(
                self.attached.study,
                settings.n_trials,
                settings.objectives[0],
                started,
                final_fit=restart is None,
            )

        with self.view(title) as progress:
            while True:
                running = _any_running(processes)
                if not (running or (restart is not None and restart(processes))):
                    break
                progress.update(now())
                each_poll()
                _pause(processes, POLL_SECONDS)
            progress.update(now())


def _run_workers(
    supervisor: _Supervisor, link: str, processes: list[Worker], dataset: Dataset
) -> tuple[int, pd.DataFrame]:
    job, attached, logs = supervisor.job, supervisor.attached, supervisor.starter.logs
    started = time.monotonic()
    interrupted = False
    final: list[Worker] = []
    final_fit = FinalFitProcess(supervisor.starter)
    try:
        restart = Restarter(job, attached, supervisor.starter.worker, job.settings.max_failures)
        title = f"sweep {job.settings.study_name}"
        early = partial(_start_early, final_fit, attached, logs)
        supervisor.watch(processes, title, started, restart, early)
        if final_fit.process is None and _search_done(job, attached, processes):
            _start_final(final_fit, logs)  # after a timeout: the trials' budget was not spent
        if final_fit.process is not None:
            final = [final_fit.process]
            processes += final
            supervisor.watch(final, f"final fit {job.settings.study_name}", started, None)
    except KeyboardInterrupt:
        interrupted = True
        _stop([*processes, *([final_fit.process] if final_fit.process and not final else [])])
    failed_workers = [(p, log) for p, log in processes if p.returncode not in (0, None)]
    for process, log in failed_workers:
        LOG.error(
            "worker %d exited with %d: %s (log: %s)",
            process.pid,
            process.returncode,
            _last_words(log),
            log,
        )
    done = Budget(job.settings.n_trials, None).remaining(attached.study)[0] <= 0
    status = "KILLED" if interrupted else ("FINISHED" if done or not failed_workers else "FAILED")
    table = finalize(job, attached, status, dataset)
    announce(f"sweep {job.settings.study_name}: compare its runs", link)
    if interrupted:
        return 130, table
    if not any(t.state == TrialState.COMPLETE for t in attached.study.get_trials(deepcopy=False)):
        LOG.error("no trial completed, so the sweep has no answer: %s", _last_failure(attached))
        return 1, table
    if any(process.returncode != 0 for process, _ in final):  # trials done, final fit not
        return 1, table
    return (0 if done or not failed_workers else 2), table


# TensorFlow's C++ log lines (E0000 00:00:...) and absl's preamble say nothing of why.
_NATIVE_LOG = re.compile(r"^([EWIF]\d{4} |WARNING: All log messages before absl)")


def _last_words(log: Path) -> str:
    """The last line of a worker's log that is not a TensorFlow native log line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    said = [line for line in lines if line and not _NATIVE_LOG.match(line)]
    return said[-1] if said else "(no message in its log)"


def _last_failure(attached: Attached) -> str:
    """Why the latest failed trial failed, as its worker recorded it."""
    failed = [t for t in attached.study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    reason = failed[-1].user_attrs.get(FAILURE_ATTR) if failed else None
    return f"trial {failed[-1].number} failed: {reason}" if reason else "see the worker logs"


def _start_early(final_fit: FinalFitProcess, attached: Attached, logs: Path) -> None:
    """Start the final fit once every trial has finished and none runs, beside the repeats."""
    if final_fit.process is None:
        left, running = Budget(final_fit.starter.job.settings.n_trials, None).remaining(
            attached.study
        )
        if left <= 0 and not running:
            _start_final(final_fit, logs)


def _start_final(final_fit: FinalFitProcess, logs: Path) -> None:
    if final_fit.starter.job.settings.final_fit.enabled:
        LOG.info("final fit of the best trial (log: %s)", logs / "final.log")
        final_fit.start()


def _search_done(job: SweepJob, attached: Attached, processes: list[Worker]) -> bool:
    """The trial budget is spent, or every worker exited cleanly when ``sweep.timeout`` ran out.

    A worker that dies after the last trial (during the seed repeats) does not cost the
    sweep its answer: the final fit's process runs whatever repeat is missing.
    """
    if Budget(job.settings.n_trials, None).remaining(attached.study)[0] <= 0:
        return True
    clean = all(process.returncode == 0 for process, _ in processes)
    return clean and (job.settings.n_trials is None or job.settings.timeout is not None)


def _pause(processes: list[Worker], seconds: float) -> None:
    """Wait up to ``seconds``, returning as soon as a running worker exits: no idle tail."""
    running = [process for process, _ in processes if process.poll() is None]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and all(process.poll() is None for process in running):
        time.sleep(0.05)


def _any_running(processes: list[Worker]) -> bool:
    """Poll every worker (reaping the ones that exited), not just the first alive one."""
    return any([process.poll() is None for process, _ in processes])


def _log_dataset_report_once(attached: Attached, dataset: Dataset) -> None:
    """The dataset report goes to the parent run once, not on resume."""
    tracker, run_id = attached.tracker, attached.parent_run_id
    if not tracker.client.list_artifacts(run_id, "eda"):
        LOG.info("writing the dataset report to the sweep's parent run")
        log_dataset_report(tracker, run_id, dataset)


def _stop(processes: list[Worker]) -> None:
    """Ask workers to stop (their running trial is failed and closed), then wait."""
    LOG.warning(
        "stopping workers: the running trials are marked failed; run the same command to resume"
    )
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process, _ in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
