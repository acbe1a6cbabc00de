"""Stopping a worker on SIGINT or SIGTERM, reliably.

A signal raises KeyboardInterrupt at once, but Python drops an exception raised
while a finalizer or weakref callback runs ("Exception ignored in ..."). The
request is therefore also remembered: the worker loop checks it before asking
for a trial, and a Keras callback checks it after every batch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import keras


@dataclass
class StopRequest:
    """A stop asked for by SIGINT or SIGTERM, remembered until the worker acts on it."""

    requested: bool = False
    deferring: bool = False  # inside ``deferred()``: remember the signal, raise on leaving

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop during the block (a run created but not yet recorded would be lost).

        The stop is remembered: the caller's next ``check()`` raises it.
        """
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this process (call from the main thread)."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.requested = True
        if not self.deferring:
            raise KeyboardInterrupt

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
