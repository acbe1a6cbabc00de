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

from satsweep.errors import UserError
from satsweep.redact import redact

DEFAULT_BACKEND = "postgresql://postgres@127.0.0.1:5432/satsweep_mlflow"


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    backend_store_uri: str
    artifacts_destination: Path

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def arguments(self) -> list[str]:
        """The flags ``mlflow server`` and ``satsweep server`` share."""
        return [
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts_destination),
        ]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlflow", "server", *self.arguments()]


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist yet."""
    if not url.startswith("postgresql"):
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(
            admin.render_as_string(hide_password=False), autocommit=True, connect_timeout=10
        ) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{parsed.database}"')
    except psycopg.OperationalError as error:
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
    os.execv(command[0], command)
