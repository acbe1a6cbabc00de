"""Locks across processes on what a store URL names: a file beside it, or PostgreSQL.

Several commands may start at once on one store (workers joining a sweep, a
cluster job array). Work that must happen once, such as MLflow's schema
migration on a fresh database or an Optuna budget check, runs under one of
these locks: a ``flock`` on a file beside a local store, a PostgreSQL advisory
lock (which holds across hosts) on a database server.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"


def is_journal(url: str) -> bool:
    """Whether a storage URL is an Optuna journal file (not a database)."""
    return "://" not in url


def local_file(url: str) -> Path | None:
    """The file behind a journal or SQLite URL; None for a database or HTTP server."""
    if is_journal(url):
        return Path(url)
    if url.startswith(SQLITE_PREFIX):
        return Path(url.removeprefix(SQLITE_PREFIX))
    return None


def store_lock(url: str, name: str) -> AbstractContextManager[None]:
    """An exclusive lock called ``name`` on the store at ``url``; none for HTTP stores.

    An HTTP tracking server migrates its own schema once, at start-up.
    """
    if url.startswith("postgresql"):
        return _postgres_advisory_lock(url, name)
    local = local_file(url)
    if local is None:
        return nullcontext()
    return file_lock(local.parent / f".{local.name}.{name}.lock")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created, with its folder, if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _postgres_advisory_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
