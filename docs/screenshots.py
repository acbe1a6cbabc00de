"""Screenshots of the MLflow UI after `make sweep`, taken in headless Chromium.

`make screenshots` runs this on the outputs folder of a finished `make sweep`:
it serves that store with `mlflow server` on 127.0.0.1, opens the links satsweep
prints (the runs table, three trials compared, the best trial's page) in Debian's
Chromium, writes the PNGs to docs/screenshots/, and stops the server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from mlflow.tracking import MlflowClient

HERE = Path(__file__).resolve().parent
WINDOW = "2200,1200"
TRAINING = "?workflowType=machine_learning"  # as satsweep's own links open a run
RENDER_MS = 20_000  # virtual time for the single-page app to fetch and draw


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(address: str, server: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not start at {address}")


def shoot(chromium: str, url: str, target: Path) -> None:
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WINDOW}",
            f"--virtual-time-budget={RENDER_MS}",
            f"--screenshot={target}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    print(f"{target.relative_to(HERE.parent)}: {url}")


def pages(client: MlflowClient, study: str, address: str) -> dict[str, str]:
    """The views a user opens after a sweep, by file name: the experiment as its home-page
    link opens it, the link satsweep prints, three trials compared, the parent run and the
    best trial."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise SystemExit(f"no MLflow experiment {study!r}: run `make sweep` first")
    eid = experiment.experiment_id
    trials = client.search_runs(
        [eid],
        "tags.`satsweep.role` = 'trial' and tags.`satsweep.trial_state` = 'complete'",
        order_by=["metrics.`final_val_f1_macro` DESC"],
    )
    if len(trials) < 3:
        raise SystemExit(f"the sweep {study!r} has {len(trials)} complete trials; 3 are needed")
    top = [run.info.run_id for run in trials[:3]]
    (parent,) = client.search_runs([eid], "tags.`satsweep.role` = 'sweep'")
    compare = quote(json.dumps(top), safe="") + "&experiments=" + quote(json.dumps([eid]), safe="")
    return {
        "experiment-from-home.png": f"{address}/#/experiments/{eid}",
        "runs-table.png": f"{address}/#/experiments/{eid}/runs"
        "?workflowType=machine_learning&viewStateShareKey=satsweep",
        "compare-three-trials.png": f"{address}/#/compare-runs?runs={compare}",
        "parent-run.png": f"{address}/#/experiments/{eid}/runs/{parent.info.run_id}{TRAINING}",
        "best-trial.png": f"{address}/#/experiments/{eid}/runs/{top[0]}{TRAINING}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--study", default="quick")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    store = f"sqlite:///{args.outputs.resolve()}/mlflow.db"
    target = HERE / "screenshots"
    target.mkdir(exist_ok=True)
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(address, server)
        for name, url in pages(MlflowClient(store), args.study, address).items():
            shoot(args.chromium, url, target / name)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
