"""The Optuna objective: one trial is one training run, logged as a child run.

The trial composes its config through Hydra (the trial's overrides on top of the
user's) and trains through :func:`satsweep.training.fit_and_log`, exactly like
``satsweep train``; Optuna sees it only through the pruning callback and the
returned objective values.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import keras
import optuna

from satsweep.baseline import Floor
from satsweep.data import Dataset, load_data
from satsweep.errors import UserError
from satsweep.redact import redact
from satsweep.runtime import peak_rss_mib
from satsweep.schema import DataConfig
from satsweep.search.job import SweepJob
from satsweep.search.pruning import ExplainedPruningCallback
from satsweep.search.runs import (
    FLOOR_ATTR,
    PRUNED_TAG,
    RUN_ATTR,
    close_trial_run,
    create_trial_run,
    scored_name,
    trial_note,
    trial_run_name,
)
from satsweep.search.settings import result_metric
from satsweep.search.stopping import StopOnRequest, StopRequest
from satsweep.search.storage import WORKER_ATTR, worker_identity
from satsweep.tracking import Tracker
from satsweep.training import fit_and_log

LOG = logging.getLogger(__name__)
FAILURE_ATTR = "failure"
RSS_ATTR = "worker_peak_rss_mib"


@dataclass
class DatasetMemo:
    """The last dataset a worker loaded: trials of one sweep usually share it."""

    key: DataConfig | None = None
    dataset: Dataset | None = None

    def get(self, cfg: DataConfig, load: Callable[[], Dataset]) -> Dataset:
        if self.dataset is None or self.key != cfg:
            self.dataset, self.key = load(), cfg
        return self.dataset


@dataclass(frozen=True)
class TrialPlan:
    """What a backend decides for a trial besides its parameters.

    KerasTuner's Hyperband sets each trial's epochs and continues earlier rounds'
    weights; Optuna trials use the empty plan.
    """

    overrides: tuple[str, ...] = ()
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    initial_epoch: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)


def too_many_failures(count: int, last_error: str) -> UserError:
    return UserError(
        f"{count} trials failed in a row (last: {last_error}): "
        f"the sweep looks broken; fix it, or raise sweep.max_failures"
    )


@dataclass
class TrialObjective:
    """Callable objective for ``study.optimize``; remembers how its last trial ended."""

    job: SweepJob
    tracker: Tracker
    parent_run_id: str
    stop: StopRequest = field(default_factory=StopRequest)
    on_start: Callable[[], None] = lambda: None  # releases the budget lock
    memo: DatasetMemo = field(default_factory=DatasetMemo)
    plan: TrialPlan = field(default_factory=TrialPlan)  # set by the backend before each trial
    last_state: str = ""
    last_error: str = ""
    last_values: list[float] = field(default_factory=list)

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        self.on_start()
        self.last_state, self.last_error = "failed", ""
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        overrides = [*self.job.space.suggest(trial), *self.plan.overrides]
        with self.stop.deferred():  # the run and its record on the trial, or neither
            run_id = create_trial_run(
                self.job, self.tracker, self.parent_run_id, trial.number, overrides
            )
            trial.set_user_attr(RUN_ATTR, run_id)
            if self.plan.tags:
                self.tracker.set_tags(run_id, dict(self.plan.tags))
        try:
            self.stop.check()  # a stop held while the run was created fails it here
            values = self._train(trial, overrides, run_id)
        except optuna.TrialPruned as pruned:
            self.last_state = "pruned"
            self.tracker.set_tags(run_id, {PRUNED_TAG: str(pruned)})
            note = self._note(trial, str(pruned), overrides, run_id)
            close_trial_run(self.tracker, run_id, "pruned", f"{self._run_name(trial)} pruned", note)
            raise
        except BaseException as error:
            self._record_failure(run_id, error, f"{self._run_name(trial)} failed")
            trial.set_user_attr(FAILURE_ATTR, redact(self.last_error)[:2000])
            raise
        self.last_state, self.last_values = "complete", values
        objective = self.job.settings.objectives[0]
        name = scored_name(self._run_name(trial), objective, {objective: values[0]})
        note = self._note(trial, f"complete, {objective}={values[0]:.4f}", overrides, run_id)
        close_trial_run(self.tracker, run_id, "complete", name, note)
        return values[0] if len(values) == 1 else values

    def _note(self, trial: optuna.Trial, outcome: str, overrides: list[str], run_id: str) -> str:
        return trial_note(self.job.settings.study_name, trial.number, outcome, overrides, run_id)

    def _run_name(self, trial: optuna.Trial) -> str:
        return trial_run_name(self.job.settings.study_name, trial.number)

    def _train(self, trial: optuna.Trial, overrides: list[str], run_id: str) -> list[float]:
        cfg = self.job.trial_config(overrides)
        dataset = self.memo.get(cfg.data, lambda: load_data(cfg))
        settings = self.job.settings
        callbacks: list[keras.callbacks.Callback] = [StopOnRequest(self.stop), *self.plan.callbacks]
        if settings.prunes:
            callbacks.append(
                ExplainedPruningCallback(trial, settings.objectives[0], settings.pruner)
            )
        floor_metrics = trial.study.user_attrs.get(FLOOR_ATTR)
        result = fit_and_log(
            cfg,
            dataset,
            self.tracker,
            run_id,
            callbacks,
            initial_epoch=self.plan.initial_epoch,
            floor=Floor(floor_metrics) if floor_metrics else None,
            model_name=self._run_name(trial),
        )
        rss = peak_rss_mib()  # a worker that keeps growing over trials leaks
        trial.set_user_attr(RSS_ATTR, rss)
        self.tracker.log_metrics(run_id, {RSS_ATTR: rss}, step=result.epochs_run)
        values = [result.metrics[result_metric(name)] for name in settings.objectives]
        bad = [n for n, v in zip(settings.objectives, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"objective {bad[0]} is not finite")
        LOG.info(
            "trial %d complete: %s",
            trial.number,
            ", ".join(f"{n}={v:.4f}" for n, v in zip(settings.objectives, values, strict=True)),
        )
        return values

    def _record_failure(self, run_id: str, error: BaseException, name: str) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        interrupted = isinstance(error, KeyboardInterrupt)
        self.tracker.set_tags(run_id, {"satsweep.failure": redact(self.last_error)[:5000]})
        if not interrupted:
            self.tracker.log_text(run_id, redact(traceback.format_exc()), "failure/traceback.txt")
        close_trial_run(self.tracker, run_id, "failed", name)
