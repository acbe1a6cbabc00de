"""Real servers for tests, bound to 127.0.0.1 on a free port and always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from satsweep.server import ServerSettings

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MlflowServer:
    """``mlflow server`` over a backend store, started and stopped by the test."""

    def __init__(
        self,
        backend_uri: str,
        artifacts: Path,
        port: int | None = None,
        through_satsweep: bool = False,
    ) -> None:
        self.through_satsweep = through_satsweep  # `satsweep server` rather than `mlflow server`
        self.backend_uri = backend_uri
        self.artifacts = artifacts
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = artifacts.parent / f"mlflow-server-{self.port}.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        # one process serving requests: four would each import MLflow (seconds) on 2 cores
        settings = ServerSettings("127.0.0.1", self.port, self.backend_uri, self.artifacts, 1)
        environment = settings.environment()
        if self.through_satsweep:  # as a user would: the backend in satsweep's variable
            environment = {**os.environ, "SATSWEEP_MLFLOW_BACKEND": self.backend_uri}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command(settings),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not start: {self.log.read_text()[-2000:]}")

    def _command(self, settings: ServerSettings) -> list[str]:
        if not self.through_satsweep:
            return settings.command()
        return [sys.executable, "-m", "satsweep", "server", *settings.arguments()]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
