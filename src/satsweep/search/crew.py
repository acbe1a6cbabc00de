"""A sweep's worker processes, started the moment its job is composed.

A worker spends seconds importing TensorFlow; the launcher spends as long
importing MLflow, pandas and matplotlib, then opening the stores. This module
imports none of them, so ``satsweep sweep`` starts its workers first and both
import at once, on separate cores. The workers then wait at the start gate
until the launcher has set the sweep up.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from satsweep.errors import UserError
from satsweep.search.gate import StartGate
from satsweep.search.job import JobHandoff, SweepJob, job_path, save_job

LAUNCHER_ENV = "SATSWEEP_LAUNCHER_PID"  # a launched worker ends when its launcher does

Worker = tuple[subprocess.Popen[bytes], Path]  # a worker process and its log


def worker_command(*options: str) -> list[str]:
    """The command line of a ``satsweep worker`` process.

    Its job does not travel here but in the environment (see ``JobHandoff``).
    """
    return [sys.executable, "-m", "satsweep", "worker", *options]


def threads_per_worker(workers: int) -> int:
    """Split the cores between workers, so N workers do not oversubscribe the CPU."""
    return max(1, (os.cpu_count() or 1) // workers)


def start_worker(
    handoff: JobHandoff, log_path: Path, *options: str, gate: StartGate | None = None
) -> Worker:
    """A ``satsweep worker`` process with ``options``, its output in ``log_path``.

    It loads the job the launcher saved: the sweep is not composed again, and its
    passwords stay out of argv, which any user on the machine can read. A worker
    given ``gate`` waits at it before attaching to the study.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **handoff.environment(), LAUNCHER_ENV: str(os.getpid())}
    if gate is not None:
        environment.update(gate.environment())
    with _open_log(log_path) as log:
        process = subprocess.Popen(
            worker_command(*options),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops them once
            pass_fds=(gate.read_fd,) if gate is not None else (),
        )
    return process, log_path


def _open_log(path: Path) -> BinaryIO:
    """The log, for appending, never through a link: a link planted in a shared outputs
    folder would make the sweep append to any file its user can write."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise _linked(path) from error
    return os.fdopen(descriptor, "ab")


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise _linked(path)


def _linked(path: Path) -> UserError:
    return UserError(
        f"the sweep's log {path} is a symbolic link: satsweep writes no log through a "
        "link; remove it (or choose another paths.outputs)"
    )


@dataclass(frozen=True)
class Starter:
    """How this sweep's worker processes start: the saved job, their logs, their threads."""

    job: SweepJob
    handoff: JobHandoff
    logs: Path
    workers: int

    @classmethod
    def for_job(cls, job: SweepJob, workers: int) -> Starter:
        """Save ``job`` where its workers load it; they log beside it."""
        path = job_path(job)
        return cls(job, save_job(job, path), path.parent, workers)

    def worker(self, index: int, gate: StartGate | None = None) -> Worker:
        """Worker ``index`` of the sweep (its sampler seed's offset)."""
        threads = self.job.base.trainer.threads or threads_per_worker(self.workers)
        return start_worker(
            self.handoff,
            self.logs / f"worker-{index}.log",
            "--threads",
            str(threads),
            "--worker-index",
            str(index),
            gate=gate,
        )

    def final(self) -> Worker:
        """The process that retrains the best trial, with every core."""
        threads = self.job.base.trainer.threads or threads_per_worker(1)
        return start_worker(
            self.handoff, self.logs / "final.log", "--final-fit", "--threads", str(threads)
        )


@dataclass
class FinalFitProcess:
    """The final fit's process, started once.

    It starts the moment every trial has finished, beside the workers' seed repeats
    (one thread each): a fit on every core leaves them idle at its many small
    synchronisations, so the repeats slow it by less than their own time (on 2 cores,
    a 2-thread fit and two repeats finished together in 92 s, and one after the other
    in 108 s). A sweep bounded by ``sweep.timeout`` starts it after its workers.
    """

    starter: Starter
    process: Worker | None = None

    def start(self) -> Worker:
        """The process, started now unless it already runs."""
        if self.process is None:
            self.process = self.starter.final()
        return self.process


@dataclass
class Crew:
    """The sweep's first workers, importing while they wait at the start gate."""

    starter: Starter
    gate: StartGate
    processes: list[Worker]

    @classmethod
    def start(cls, job: SweepJob, workers: int) -> Crew:
        """Save the job and start ``workers`` processes, held at a closed gate."""
        starter = Starter.for_job(job, workers)
        for name in [*(f"worker-{index}.log" for index in range(workers)), "final.log"]:
            _refuse_link(starter.logs / name)  # before any trial, not at the final fit
        gate = StartGate()
        return cls(starter, gate, [starter.worker(index, gate) for index in range(workers)])

    def let_in(self) -> None:
        """The sweep is set up: every waiting worker goes on."""
        self.gate.open(len(self.processes))

    def dismiss(self) -> None:
        """The set-up failed: end the workers, which have not attached and hold nothing."""
        self.gate.close()
        for process, _ in self.processes:
            process.kill()
            process.wait()
