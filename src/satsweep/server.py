"""``satsweep server``: an MLflow tracking server for workers on many machines.

A thin, explicit wrapper around ``mlflow server``: a PostgreSQL backend store
(created if missing), an artifact folder the server serves itself, and
127.0.0.1 unless ``--host`` says otherwise. It prints the URI workers use.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satsweep.errors import UserError
from satsweep.redact import redact

DEFAULT_BACKEND = "postgresql://postgres@127.0.0.1:5432/satsweep_mlflow"
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"  # read by `mlflow server` in place of the flag
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


@dataclass(frozen=True)
class ServerSettings:
    """Where ``satsweep server`` listens and keeps its runs and artifacts."""

    host: str
    port: int
    backend_store_uri: str
    artifacts_destination: Path
    workers: int  # processes serving requests: each imports MLflow, seconds on a small machine

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UserError(
                f"--workers {self.workers}: the server needs at least 1 process; pass --workers 1"
            )

    @property
    def uri(self) -> str:
        """The tracking URI workers use to reach this server."""
        return f"http://{self.host}:{self.port}"

    def arguments(self) -> list[str]:
        """The flags ``mlflow server`` and ``satsweep server`` share.

        The backend store URI is not among them: it may hold a password, and any
        user on the machine can read a process's argv. It travels in the
        environment (:meth:`environment`) instead.
        """
        return [
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--artifacts-destination",
            str(self.artifacts_destination),
            "--workers",
            str(self.workers),
        ]

    def environment(self) -> dict[str, str]:
        """This process's environment plus the backend store, for ``mlflow server``.

        MLflow's job execution (GenAI judges and trace rollups, which satsweep never
        submits) is off unless the environment turns it on: it would start seven more
        processes, each importing MLflow.
        """
        return {JOBS_ENV: "false", **os.environ, BACKEND_ENV: self.backend_store_uri}

    def command(self) -> list[str]:
        """The ``mlflow server`` command line; the store's password stays in the environment."""
        return [sys.executable, "-m", "mlflow", "server", *self.arguments()]


POSTGRES_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers


def _database_exists(connection: Any, name: str) -> bool:
    found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return found.fetchone() is not None


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist yet."""
    if not url.startswith("postgresql"):
        return
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.database or len(parsed.database.encode()) > POSTGRES_NAME_BYTES:
        raise UserError(
            f"the backend store {redact(url)} names the database {parsed.database!r}: give a "
            f"name of 1 to {POSTGRES_NAME_BYTES} bytes (PostgreSQL cuts longer names short)"
        )
    # Keywords, not a rendered URL: libpq's URL parser rejects what SQLAlchemy accepts
    # in a password (a raw space, for one).
    params: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        **{key: str(value) for key, value in parsed.query.items()},
    }
    try:
        with psycopg.connect(
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
            **{key: value for key, value in params.items() if value is not None},
        ) as connection:
            if not _database_exists(connection, parsed.database):
                connection.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database))
                )
            if not _database_exists(connection, parsed.database):  # never wait on MLflow's retries
                raise UserError(
                    f"PostgreSQL did not create the database {parsed.database!r} of "
                    f"{redact(url)}: create it by hand, or pass another --backend-store-uri"
                )
    except psycopg.Error as error:
        raise UserError(
            f"cannot reach PostgreSQL for the backend store {redact(url)} "
            f"({' '.join(str(error).split())}): start it or pass --backend-store-uri"
        ) from error


def serve(settings: ServerSettings) -> None:
    """Replace this process with the MLflow server (so signals reach it directly)."""
    ensure_database(settings.backend_store_uri)
    settings.artifacts_destination.mkdir(parents=True, exist_ok=True)
    print(
        f"MLflow tracking server on {settings.uri}; workers use: "
        f"tracking=server tracking.uri={settings.uri}",
        flush=True,
    )
    command = settings.command()
    os.execve(command[0], command, settings.environment())
