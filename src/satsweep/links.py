"""Addresses in the MLflow UI, for the links satsweep prints and writes into descriptions.

MLflow 3 opens an experiment on its GenAI overview (traces, tokens, cost). The
``workflowType=machine_learning`` query opens the runs table instead, which is
what a sweep's user came for. Credentials in a tracking URL never appear in a link.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from satsweep.schema import TrackingConfig

MODEL_TRAINING = "workflowType=machine_learning"
RUNS_VIEW = f"runs?{MODEL_TRAINING}"
# MLflow's "share view": an experiment tag holding the runs table's state (columns,
# sort order), opened by the link's viewStateShareKey. satsweep writes one per sweep.
SHARED_VIEW_TAG = "mlflow.sharedViewState."
VIEW_KEY = "satsweep"


def ui_address(tracking: TrackingConfig) -> str:
    """The UI of a tracking server is the server; a local store's is ``tracking.ui``."""
    base = tracking.uri if tracking.uri.startswith(("http://", "https://")) else tracking.ui
    parts = urlsplit(base)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _base(tracking: TrackingConfig | None) -> str:
    """The UI's address; none (links relative to the page) inside the UI's own descriptions,
    so that they follow whatever host and port the UI is served on."""
    return f"{ui_address(tracking)}/" if tracking is not None else ""


def runs_link(tracking: TrackingConfig | None, experiment_id: str, view: bool = False) -> str:
    """The experiment's runs table; with ``view``, in the state satsweep saved for it."""
    shared = f"&viewStateShareKey={VIEW_KEY}" if view else ""
    return f"{_base(tracking)}#/experiments/{experiment_id}/{RUNS_VIEW}{shared}"


def runs_view(
    sort_metric: str, ascending: bool, metrics: Sequence[str], params: Sequence[str]
) -> dict[str, str]:
    """The experiment tag that opens the runs table sorted, with these columns shown.

    Column keys are the UI's own: ``metrics.`name```, ``params.`name```.
    """
    columns = [
        *(f"metrics.`{name}`" for name in metrics),
        *(f"params.`{name}`" for name in params),
        "attributes.`Models`",
    ]
    state = {
        "orderByKey": f"metrics.`{sort_metric}`",
        "orderByAsc": ascending,
        "selectedColumns": columns,
    }
    return {f"{SHARED_VIEW_TAG}{VIEW_KEY}": json.dumps(state)}


def run_link(tracking: TrackingConfig | None, experiment_id: str, run_id: str) -> str:
    """One run's page: its params, metrics, artifacts and logged model."""
    return f"{_base(tracking)}#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def announce(what: str, link: str) -> None:
    """One line, never wrapped (a log handler would break the link and it would not open)."""
    print(f"{what} in the MLflow UI (make ui): {link}", flush=True)
