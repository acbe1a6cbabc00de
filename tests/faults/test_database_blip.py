"""The study's PostgreSQL refusing connections for a few seconds (a restart, a fail-over).

The real server stays up for the rest of the suite: a TCP proxy on 127.0.0.1
stands between it and satsweep, and stops listening (and drops every open
connection) for two seconds, as a restarting server does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy.exc

from satsweep.schema import StorageConfig
from satsweep.search.storage import open_storage

POSTGRES = ("127.0.0.1", 5432)


class Proxy:
    """Forwards 127.0.0.1:port to PostgreSQL; ``blip`` refuses every connection for a while."""

    def __init__(self) -> None:
        self.port = 0
        self.down = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed: a blip, or the end
                return
            server = socket.create_connection(POSTGRES)
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def blip(self, seconds: float) -> threading.Thread:
        """Stop listening and drop every connection, then listen again after ``seconds``."""
        self._close()
        self.down.set()
        reopen = threading.Timer(seconds, self.start)
        reopen.start()
        return reopen

    def _close(self) -> None:
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            for open_socket in self._sockets:
                _quietly_close(open_socket)
            self._sockets.clear()

    def stop(self) -> None:
        self._close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):  # either end closed: a blip, or the end
        while data := source.recv(65536):
            target.sendall(data)
    _quietly_close(target)


def _quietly_close(open_socket: socket.socket) -> None:
    with contextlib.suppress(OSError):
        open_socket.shutdown(socket.SHUT_RDWR)
    open_socket.close()


@contextlib.contextmanager
def _proxy() -> Iterator[Proxy]:
    proxy = Proxy()
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _storage(url: str, reconnect_seconds: int) -> optuna.storages.BaseStorage:
    return open_storage(
        StorageConfig(
            url=url,
            heartbeat_interval=None,
            grace_period=None,
            failed_trial_max_retry=1,
            reconnect_seconds=reconnect_seconds,
        )
    )


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.postgres
@pytest.mark.parametrize("reconnect_seconds", [60, 0])
def test_a_study_outlives_a_database_blip(postgres_url, reconnect_seconds) -> None:
    with _proxy() as proxy:
        url = postgres_url.replace(":5432/", f":{proxy.port}/")
        study = optuna.create_study(study_name="blip", storage=_storage(url, reconnect_seconds))
        study.optimize(_objective, n_trials=1)
        reopen = proxy.blip(seconds=2.0)
        assert proxy.down.wait(timeout=30), "the proxy never went down"
        try:
            if reconnect_seconds:  # retried until the database is back: nothing is lost
                study.optimize(_objective, n_trials=1)
                assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
            else:  # the same blip without retries: what used to kill the launcher
                refused = (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)
                with pytest.raises(refused):
                    study.optimize(_objective, n_trials=1)
        finally:
            reopen.join(timeout=30)
