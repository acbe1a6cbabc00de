"""A start gate: workers import TensorFlow while their launcher sets the sweep up.

Importing TensorFlow takes a worker several seconds; opening the stores (a
fresh MLflow store runs its schema migrations), creating the study and parent
run, and fitting the no-learning floor take the launcher as long again. So its
crew (:mod:`satsweep.search.crew`) starts the workers first, the moment the job
is composed, each holding the read end of one pipe. A worker blocks on it just
before it attaches to the study. The launcher writes one byte per worker once
the sweep is set up; if the set-up fails it closes the pipe unwritten (as does
the kernel when the launcher dies), and the workers exit having created nothing.
"""

from __future__ import annotations

import os

from satsweep.errors import UserError

GATE_ENV = "SATSWEEP_START_GATE"  # the file descriptor a launched worker waits on


class StartGate:
    """The launcher's end: one pipe, its read end inherited by the workers it starts."""

    def __init__(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        self._closed = False

    def environment(self) -> dict[str, str]:
        """The variable that tells a worker which descriptor to wait on."""
        return {GATE_ENV: str(self.read_fd)}

    def open(self, workers: int) -> None:
        """Let ``workers`` waiting workers go on."""
        if not self._closed:
            os.write(self._write_fd, b"g" * workers)
        self.close()

    def close(self) -> None:
        """Close both ends: a worker that was not let through reads end-of-file."""
        if not self._closed:
            os.close(self._write_fd)
            os.close(self.read_fd)
            self._closed = True


SET_UP_FAILED = "the launcher could not set the sweep up (see its output): exiting"


def wait_at_gate() -> None:
    """In a launched worker, block until its launcher lets it go on; else exit in one line.

    The variable is dropped once used: a worker that re-executes itself, or one
    started later, does not wait again.
    """
    descriptor = os.environ.pop(GATE_ENV, None)
    if descriptor is None:
        return
    fd = int(descriptor)
    try:
        opened = os.read(fd, 1) == b"g"
    finally:
        os.close(fd)
    if not opened:
        raise UserError(SET_UP_FAILED)
