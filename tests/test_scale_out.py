"""Distributed sweeps on the real PostgreSQL and an MLflow server backed by it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import REPO, run_satsweep, wait_until, with_test_hooks
from tests.servers import MlflowServer

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
pytestmark = pytest.mark.postgres


def _start_worker(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "satsweep", "worker", *args, "--threads", "1"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )


@pytest.mark.slow
def test_three_workers_on_postgres_with_one_killed(
    outputs, sweep_args, tmp_path, postgres_databases, monkeypatch
) -> None:
    optuna_url, mlflow_url = postgres_databases(), postgres_databases()
    server = MlflowServer(mlflow_url, tmp_path / "artifacts", through_satsweep=True).start()
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        args = [
            *sweep_args,
            "sweep.n_trials=9",
            "sweep.pruner.name=none",
            "storage=postgres",
            f"storage.url={optuna_url}",
            "storage.heartbeat_interval=1",
            "storage.grace_period=5",
            "tracking=server",
            f"tracking.uri={server.uri}",
        ]
        # a test hook holds the first worker to reach its second trial's second epoch:
        # the kill lands inside a trial, every time
        held = tmp_path / "held-fit.pid"
        monkeypatch.setenv("PYTHONPATH", with_test_hooks())
        monkeypatch.setenv("SATSWEEP_TEST_HOLD_SECOND_FIT", str(held))
        logs = [stack.enter_context(open(tmp_path / f"worker-{i}.log", "w")) for i in range(3)]
        workers = [_start_worker(args, log) for log in logs]
        storage = optuna.storages.RDBStorage(optuna_url)
        wait_until(
            lambda: (
                any(w.poll() is not None for w in workers) or (held.exists() and held.read_text())
            ),
            "a worker to hold its second trial after one epoch",
        )
        assert all(w.poll() is None for w in workers), "a worker ended before the kill"
        victim = int(held.read_text())
        os.kill(victim, signal.SIGKILL)
        for worker in workers:
            worker.wait(timeout=600)
        assert sorted(w.returncode for w in workers) == [-signal.SIGKILL, 0, 0]

        study = optuna.load_study(study_name="smoke", storage=storage)
        finished = sorted(t.number for t in study.trials if t.state in FINISHED)
        assert len(finished) == 9
        client = MlflowClient(server.uri)
        runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        parents = [r for r in runs if r.data.tags.get("satsweep.role") == "sweep"]
        assert len(parents) == 1
        children = [r for r in runs if r.data.tags.get("satsweep.role") == "trial"]
        complete = sorted(
            int(r.data.tags["satsweep.trial"])
            for r in children
            if r.data.tags["satsweep.trial_state"] == "complete"
        )
        assert complete == finished  # each trial once in Optuna and once in MLflow
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
        assert all(r.info.status != "RUNNING" for r in children)

        shown = run_satsweep(
            "compare",
            "smoke",
            "storage=postgres",
            f"storage.url={optuna_url}",
            "tracking=server",
            f"tracking.uri={server.uri}",
        )
        assert shown.returncode == 0, shown.stderr
        assert sum(" complete " in line for line in shown.stdout.splitlines()) == 9


@pytest.mark.slow
def test_server_command_prints_the_uri_and_binds_loopback(tmp_path, postgres_databases) -> None:
    backend = postgres_databases()
    port = MlflowServer(backend, tmp_path / "a").port
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "satsweep",
            "server",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "a"),
            "--workers",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first = process.stdout.readline()
        assert f"tracking.uri=http://127.0.0.1:{port}" in first
        client = MlflowClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while True:
            try:
                client.search_experiments()
                break
            except Exception:
                assert time.monotonic() < deadline, "server did not answer"
                time.sleep(1)
        listening = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True
        ).stdout
        local_addresses = {line.split()[3] for line in listening.splitlines()}
        assert local_addresses == {f"127.0.0.1:{port}"}
        # two processes serve requests, and MLflow's job runner (GenAI jobs) is off
        started = subprocess.run(
            ["ps", "-ww", "--sid", str(process.pid), "-o", "args="], capture_output=True, text=True
        ).stdout
        assert started.count("--multiprocessing-fork") == 2, started
        assert "huey" not in started and "_job_runner" not in started, started
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
