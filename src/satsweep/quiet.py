"""Quiet third-party libraries, for the CLI and the Python API alike.

Users see satsweep's own lines; what TensorFlow, MLflow and Optuna print on
start-up says nothing they can act on, and MLflow's run links would carry the
tracking URI's password.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def quiet_libraries() -> None:
    """Keep the console for satsweep's own lines; settings the user made win."""
    # Heartbeats and journal storage are marked experimental by Optuna; users cannot act on it.
    warnings.filterwarnings("ignore", message=".*experimental.*", category=Warning)
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # satsweep retries with its own backoff and then spools; MLflow's own retries
    # (minutes, by default) would stall training while the server is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # MLflow prints "View run ... at: <tracking URI>" with the URI's password in it.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("absl", "alembic", "mlflow", "optuna", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # We log models without a signature on purpose: inputs are raw uint8 chips.
    logging.getLogger("mlflow.keras.save").setLevel(logging.ERROR)


def quiet_tensorflow(trains_here: bool) -> None:
    """TensorFlow's C++ notes (oneDNN, NodeDef attributes) say nothing a user can act on.

    Commands that train in their own process hide them all; a sweep's workers,
    whose logs are for debugging, keep TensorFlow's warnings and errors. A level
    the user set wins.
    """
    level = "3" if trains_here else "2"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", level)


def load_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up notes silenced.

    TensorFlow writes notes (oneDNN, absl) to the stderr file descriptor before its
    log level applies, which would turn a one-line user error into several lines.
    Python errors from the import still surface: the descriptor is restored first.
    """
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
