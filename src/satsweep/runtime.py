"""TensorFlow process settings: threads and determinism.

Thread pools can be sized only before TensorFlow starts its runtime, so workers
call :func:`configure_threads` once, first thing; determinism is set per run.
"""

from __future__ import annotations

import gc
import logging
import resource

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

LOG = logging.getLogger(__name__)


def configure_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (0 = TensorFlow's default: every core).

    The count changes a run's numbers (reductions split differently), so a run
    records it (``trainer.threads``) and its reproduction asks for it here. Pools
    can be sized only before TensorFlow's runtime starts: a process already running
    with another count keeps it, and says so.
    """
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if threads <= 0 or current == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        LOG.warning(
            "TensorFlow already runs with %s intra-op threads, not trainer.threads=%d: "
            "the numbers may differ from a run with %d threads (start a new process)",
            current or "all",
            threads,
            threads,
        )


def prepare_run(seed: int, deterministic: bool, precision: str, threads: int) -> None:
    """Fresh Keras state, seeded, on ``threads`` threads; with ``deterministic``, TF ops are
    made deterministic too.

    ``precision`` is Keras' global dtype policy, set per run because the previous
    run in this process (a sweep's worker) may have used another.
    """
    configure_threads(threads)
    keras.backend.clear_session(free_memory=True)
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # a worker's previous run may have enabled it; TF exports no public "disable"
        tf_config.disable_op_determinism()


def settle_between_runs() -> None:
    """Free the last run's Keras state, then freeze what survives for the garbage collector.

    A worker keeps half a million long-lived objects (TensorFlow's, MLflow's, the
    dataset's) that each run's collection scanned again: 0.3-0.4 s a trial on
    2 cores, growing with every trial. Frozen objects are still freed when their
    last reference goes; only cycles among them are no longer looked for, and
    a worker re-executes itself every ``sweep.trials_per_process`` trials.
    """
    keras.backend.clear_session(free_memory=True)
    gc.freeze()


def accelerator() -> str:
    """ "gpu" when TensorFlow sees one (results may then differ in the last digits), else "cpu"."""
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
