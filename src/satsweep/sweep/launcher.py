"""``satsweep sweep``: start N worker processes on one study and watch them.

Workers are separate processes (``satsweep worker``), each keeping TensorFlow
loaded across its trials; they share the study through its storage and never
wait for each other. This process only shows progress, and when the workers are
done (or interrupted) writes the sweep's record to the parent MLflow run.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd

from satsweep.data import load_data
from satsweep.eda import log_dataset_report
from satsweep.sweep.attach import Attached, Budget, attach
from satsweep.sweep.job import SweepJob
from satsweep.sweep.progress import Progress, snapshot
from satsweep.sweep.report import finalize

LOG = logging.getLogger(__name__)
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 120


def threads_per_worker(workers: int) -> int:
    """Split the cores between workers, so N workers do not oversubscribe the CPU."""
    return max(1, (os.cpu_count() or 1) // workers)


def _start_workers(
    job: SweepJob, workers: int, logs: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    logs.mkdir(parents=True, exist_ok=True)
    threads = job.base.trainer.threads or threads_per_worker(workers)
    started = []
    for index in range(workers):
        log_path = logs / f"worker-{index}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "satsweep",
                    "worker",
                    *job.overrides,
                    "--threads",
                    str(threads),
                    "--worker-index",
                    str(index),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this process, which stops them once
            )
        started.append((process, log_path))
    return started


def launch(job: SweepJob, workers: int) -> tuple[int, pd.DataFrame]:
    """Run the sweep to its budget; returns (exit code, leaderboard)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # workers' logs keep Optuna's lines
    attached = attach(job)  # creates the study and parent run once, before the workers
    _log_dataset_report_once(job, attached)
    logs = Path(job.base.paths.outputs) / "sweeps" / job.settings.study_name
    LOG.info("sweep %s: %d worker(s), logs in %s", job.settings.study_name, workers, logs)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C
    processes = _start_workers(job, workers, logs)
    started = time.monotonic()
    interrupted = False
    try:
        with Progress(f"sweep {job.settings.study_name}") as progress:
            while _any_running(processes):
                progress.update(
                    snapshot(
                        attached.study, job.settings.n_trials, job.settings.objectives[0], started
                    )
                )
                time.sleep(POLL_SECONDS)
            progress.update(
                snapshot(attached.study, job.settings.n_trials, job.settings.objectives[0], started)
            )
    except KeyboardInterrupt:
        interrupted = True
        _stop(processes)
    failed_workers = [(p, log) for p, log in processes if p.returncode not in (0, None)]
    for process, log in failed_workers:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
        LOG.error(
            "worker %d exited with %d: %s (log: %s)", process.pid, process.returncode, tail[0], log
        )
    done = Budget(job.settings.n_trials, None).remaining(attached.study)[0] <= 0
    status = "KILLED" if interrupted else ("FINISHED" if done or not failed_workers else "FAILED")
    table = finalize(job, attached.study, attached.tracker, attached.parent_run_id, status)
    if interrupted:
        return 130, table
    return (0 if done or not failed_workers else 2), table


def _any_running(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> bool:
    """Poll every worker (reaping the ones that exited), not just the first alive one."""
    return any([process.poll() is None for process, _ in processes])


def _log_dataset_report_once(job: SweepJob, attached: Attached) -> None:
    """The sweep's dataset report goes to its parent run once, not again on resume."""
    if attached.tracker.client.list_artifacts(attached.parent_run_id, "eda"):
        return
    LOG.info("writing the dataset report to the sweep's parent run")
    log_dataset_report(attached.tracker, attached.parent_run_id, load_data(job.base))


def _stop(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
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
