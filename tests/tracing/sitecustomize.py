"""Test hooks for the satsweep processes a test starts, which it cannot reach otherwise.

A test puts this folder on ``PYTHONPATH`` and sets one of:

- ``$SATSWEEP_TEST_COMPOSE_TRACE``, a file: each process appends one line per call to
  ``hydra.compose``: its pid, its command and what asked for the composition
  (``job``: a sweep's job, ``job-check``: the job checking its space, ``trial``:
  anything else, such as one trial's config). The real ``hydra.compose`` runs.
- ``$SATSWEEP_TEST_HOLD_REPEAT``, a file: the first process to start a seed repeat
  creates it, writes its pid there and waits (for the test to kill it, at most 10
  minutes) instead of training; every other repeat runs.
- ``$SATSWEEP_TEST_HOLD_AFTER_LINK``, a file: the first run link the process prints
  (``satsweep.links.announce``) is followed by creating that file, with the pid in it,
  and a wait (for the test's signal, at most 10 minutes): a stop lands exactly there.
- ``$SATSWEEP_TEST_HOLD_SECOND_FIT``, a file: the first process whose second fit (a
  worker's second trial) reaches its second epoch creates it, with the pid in it, and
  waits there until a stop is requested (at most 10 minutes): the stop lands inside
  that trial, after one epoch of it, every time.
- ``$SATSWEEP_TEST_HOLD_TRIAL_ZERO``, a folder: a worker about to train trial 0, or a
  retry of it, writes its pid to ``trial-<number>.pid`` there and waits (for the test
  to kill it, at most 10 minutes) instead of training.
"""

from __future__ import annotations

import os
import sys
import traceback

TRACE = os.environ.get("SATSWEEP_TEST_COMPOSE_TRACE")
HOLD_REPEAT = os.environ.get("SATSWEEP_TEST_HOLD_REPEAT")
HOLD_AFTER_LINK = os.environ.get("SATSWEEP_TEST_HOLD_AFTER_LINK")
HOLD_SECOND_FIT = os.environ.get("SATSWEEP_TEST_HOLD_SECOND_FIT")
HOLD_TRIAL_ZERO = os.environ.get("SATSWEEP_TEST_HOLD_TRIAL_ZERO")


def _hold(marker_path: str) -> bool:
    """Whether this process is the first to create ``marker_path``; it then holds 10 minutes."""
    import threading

    try:
        marker = os.open(marker_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.write(marker, str(os.getpid()).encode())
    os.close(marker)
    threading.Event().wait(600)  # a signal's handler interrupts the wait in the main thread
    return True


if TRACE:
    import hydra

    _compose = hydra.compose

    def _traced(*args, **kwargs):  # type: ignore[no-untyped-def]
        names = {frame.name for frame in traceback.extract_stack()}
        kind = "trial"
        if "prepare_job" in names:
            kind = "job-check" if names & {"_check_space", "_check_dimension"} else "job"
        command = sys.argv[1] if len(sys.argv) > 1 else "?"
        with open(TRACE, "a") as trace:
            trace.write(f"{os.getpid()}\t{command}\t{kind}\n")
        return _compose(*args, **kwargs)

    hydra.compose = _traced

if HOLD_REPEAT:
    from satsweep.search import noise

    _repeat = noise._repeat

    def _held(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not _hold(HOLD_REPEAT):
            return _repeat(*args, **kwargs)
        raise RuntimeError("held repeat: the test did not kill this process")

    noise._repeat = _held

if HOLD_AFTER_LINK:
    from satsweep import links

    _announce = links.announce

    def _announced(what: str, link: str) -> None:
        _announce(what, link)
        if _hold(HOLD_AFTER_LINK):
            raise RuntimeError("held after the link: the test sent no signal")

    links.announce = _announced

if HOLD_SECOND_FIT:
    import time

    from satsweep.search.stopping import StopOnRequest

    _fits: list[object] = []

    def _count_fit(self, logs=None):  # type: ignore[no-untyped-def]
        _fits.append(self)

    def _hold_until_stopped(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        """On the main thread, where the stop's signal handler runs; Keras calls it in order."""
        if len(_fits) != 2 or epoch != 1:
            return
        try:
            marker = os.open(HOLD_SECOND_FIT, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return
        os.write(marker, str(os.getpid()).encode())
        os.close(marker)
        deadline = time.monotonic() + 600
        while not self.stop.requested and time.monotonic() < deadline:
            time.sleep(0.05)

    StopOnRequest.on_train_begin = _count_fit
    StopOnRequest.on_epoch_begin = _hold_until_stopped

if HOLD_TRIAL_ZERO:
    from satsweep.search.objective import TrialObjective

    _train = TrialObjective._train

    def _held_train(self, trial, *args, **kwargs):  # type: ignore[no-untyped-def]
        frozen = trial.study._storage.get_trial(trial._trial_id)  # its retry's system attrs
        if trial.number == 0 or frozen.system_attrs.get("failed_trial") == 0:
            marker = os.path.join(HOLD_TRIAL_ZERO, f"trial-{trial.number}.pid")
            if _hold(marker):
                raise RuntimeError("held trial: the test did not kill this worker")
        return _train(self, trial, *args, **kwargs)

    TrialObjective._train = _held_train
