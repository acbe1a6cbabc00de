"""Stopping a worker on SIGINT or SIGTERM, reliably.

The signal handler only remembers the request; the worker acts on it at points
where nothing is half-written: the worker loop before it asks for a trial, the
objective once the trial's run exists, and a Keras callback after every batch.
A second signal stops the worker at once, for a user who will not wait.
A KeyboardInterrupt raised at once could land inside a database commit of MLflow
or Optuna: SQLite then keeps the process's transaction open, every later write
of that process fails with "database is locked", and the trial's run stays
RUNNING. Python also drops an exception raised while a finalizer runs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

import keras


@dataclass
class StopRequest:
    """A stop asked for by SIGINT or SIGTERM, remembered until the worker acts on it."""

    requested: bool = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this process (call from the main thread)."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        if self.requested:  # asked twice (Ctrl-C again): stop now, whatever is running
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was asked for."""
        if self.requested:
            raise KeyboardInterrupt


class StopOnRequest(keras.callbacks.Callback):
    """Ends training at the next batch once a stop was requested.

    ``async_safe``: Keras runs the check on its callback thread and re-raises the
    interrupt in the training loop a batch or two later, rather than making every
    step wait for its logs to reach Python.
    """

    async_safe = True

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """A stop ends training after the current batch, not the current epoch."""
        self.stop.check()

    def on_test_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Nor does it wait for the epoch's validation to end."""
        self.stop.check()


def stop_with_launcher(poll_seconds: float = 1.0) -> None:
    """SIGTERM this worker when the launcher that started it dies (even by SIGKILL).

    Its trial is then failed and closed as usual, rather than a worker running on
    unsupervised; the same ``satsweep sweep`` command resumes the study.
    """
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
