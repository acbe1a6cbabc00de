"""Scale-out numbers for ``docs/scale-out.md``: throughput per worker count, storage per trial.

Runs the same small sweep with 1, 2 and 3 worker processes on PostgreSQL (one
fresh database each) and once on a journal file, and prints a Markdown table.
Usage: ``python -m satsweep.benchmarks.scale_out [--trials 8] [OVERRIDE ...]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import psycopg

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SMALL = [
    "data.image_size=32",
    "data.max_per_class=40",
    "data.classes=[Beach,Forest,Port,Desert,River,Farmland]",
    "trainer.epochs=4",
    "sweep.pruner.name=none",
    "sweep.final_fit.enabled=false",
    "tracking.log_model=false",
]


def _database(connection: psycopg.Connection) -> str:
    name = f"satsweep_bench_{uuid.uuid4().hex[:8]}"
    connection.execute(f'CREATE DATABASE "{name}"')
    return name


def _size(connection: psycopg.Connection, name: str) -> int:
    row = connection.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


def _sweep(args: list[str], workers: int, outputs: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "satsweep", "sweep", *args, "--workers", str(workers)],
        check=True,
        capture_output=True,
        env={**os.environ, "SATSWEEP_OUTPUTS": str(outputs)},
    )
    return time.perf_counter() - started


def main() -> None:
    """Workers on several machines against one, through PostgreSQL and an MLflow server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    options = parser.parse_args()
    base = ["sweep=quick", *SMALL, f"sweep.n_trials={options.trials}", *options.overrides]
    rows = []
    with (
        psycopg.connect(ADMIN, autocommit=True) as connection,
        tempfile.TemporaryDirectory() as scratch,
    ):
        for workers in (1, 2, 3):
            name = _database(connection)
            url = f"postgresql://postgres@127.0.0.1:5432/{name}"
            optuna.storages.RDBStorage(url).remove_session()  # creates Optuna's tables
            empty = _size(connection, name)
            seconds = _sweep(
                [*base, "storage=postgres", f"storage.url={url}"],
                workers,
                Path(scratch) / f"pg{workers}",
            )
            per_trial = (_size(connection, name) - empty) / options.trials
            rows.append(("PostgreSQL", workers, seconds, per_trial))
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        outputs = Path(scratch) / "journal"
        seconds = _sweep(base, 1, outputs)
        rows.append(
            (
                "journal file",
                1,
                seconds,
                (outputs / "optuna.journal").stat().st_size / options.trials,
            )
        )
    print(f"{options.trials} trials each, {os.cpu_count()} cores\n")
    print("| storage | workers | wall time (s) | trials per minute | storage per trial |")
    print("| ------- | ------- | ------------- | ----------------- | ----------------- |")
    for storage, workers, seconds, per_trial in rows:
        print(
            f"| {storage} | {workers} | {seconds:.0f} | {options.trials / seconds * 60:.1f} | "
            f"{per_trial / 1024:.1f} KiB |"
        )


if __name__ == "__main__":
    main()
