"""One more training run under a sweep's parent run: the final fit, a noise repeat.

Both train a trial's configuration again, outside Optuna, through the same
:func:`~satsweep.training.fit_and_log` as every trial; a run that raises is closed
FAILED, so no child of the sweep is left RUNNING.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from satsweep.baseline import cached_floor
from satsweep.data import load_data
from satsweep.schema import RunConfig
from satsweep.search.attach import Attached
from satsweep.search.job import SweepJob
from satsweep.training import ArtifactPlan, TrainResult, fit_and_log


def fit_child_run(
    job: SweepJob,
    attached: Attached,
    cfg: RunConfig,
    name: str,
    tags: Mapping[str, Any],
    callbacks: Sequence[keras.callbacks.Callback],
    plan_artifacts: Callable[[Mapping[str, float]], ArtifactPlan] | None = None,
) -> tuple[str, TrainResult]:
    """Train ``cfg`` in a new child run of the sweep; (its run id, the result), still open.

    The floor is the trials' (the sweep's seed) on this run's own split.
    """
    dataset = load_data(cfg)
    tracker = attached.tracker
    run_id = tracker.create_run(
        tracker.experiment_id(job.settings.experiment),
        name,
        tags=dict(tags),
        parent_run_id=attached.parent_run_id,
    )
    try:
        result = fit_and_log(
            cfg,
            dataset,
            tracker,
            run_id,
            callbacks,
            floor=cached_floor(dataset, job.base.seed, Path(cfg.paths.cache)),
            model_name=name,
            plan_artifacts=plan_artifacts,
        )
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    return run_id, result
