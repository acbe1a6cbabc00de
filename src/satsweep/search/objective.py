"""The Optuna objective: one trial is one training run, logged as a child run.

The trial composes its config through Hydra (the trial's overrides on top of the
user's) and trains through :func:`satsweep.training.fit_and_log`, exactly like
``satsweep train``; Optuna sees it only through the pruning callback and the
returned objective values.

What a caller decides for one trial (a backend's plan, the hook that releases
the budget lock) is bound to that trial's call by :meth:`TrialObjective.for_trial`;
how the trial ended reaches callers as the FrozenTrial Optuna hands the
callbacks of ``study.optimize`` (:class:`LastTrial`), never as attributes set
and read around the call.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import keras
import optuna
from optuna.trial import TrialState

from satsweep.baseline import Floor
from satsweep.data import Dataset, load_data
from satsweep.errors import UserError
from satsweep.redact import redact
from satsweep.runtime import peak_rss_mib
from satsweep.schema import DataConfig
from satsweep.search.job import SweepJob
from satsweep.search.ledger import (
    FAILURE_ATTR,
    FAILURE_TAG,
    FIDELITY_ATTR,
    FLOOR_ATTR,
    PRUNED_TAG,
    RSS_ATTR,
    RUN_ATTR,
    VAL_IMAGES_ATTR,
    WORKER_ATTR,
)
from satsweep.search.pruning import ExplainedPruningCallback
from satsweep.search.runs import (
    close_trial_run,
    create_trial_run,
    scored_name,
    trial_note,
    trial_run_name,
)
from satsweep.search.settings import result_metric
from satsweep.search.stopping import StopOnRequest, StopRequest
from satsweep.search.storage import worker_identity
from satsweep.tracking import Tracker
from satsweep.training import EVERYTHING, ArtifactPlan, fit_and_log

LOG = logging.getLogger(__name__)


@dataclass
class DatasetMemo:
    """The last dataset a worker loaded: trials of one sweep usually share it."""

    key: DataConfig | None = None
    dataset: Dataset | None = None

    def get(self, cfg: DataConfig, load: Callable[[], Dataset]) -> Dataset:
        """The dataset of ``cfg``, decoded only when it differs from the last trial's."""
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
    """The error that ends a sweep whose trials keep failing, rather than burning its budget."""
    return UserError(
        f"{count} trials failed in a row (last: {last_error}): "
        f"the sweep looks broken; fix it, or raise sweep.max_failures"
    )


@dataclass
class LastTrial:
    """A ``study.optimize`` callback: keeps the FrozenTrial of the trial that just ended."""

    trial: optuna.trial.FrozenTrial | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        del study
        self.trial = trial

    @property
    def failed(self) -> bool:
        """Whether the trial failed (an exception, a non-finite objective)."""
        return self.trial is None or self.trial.state == TrialState.FAIL

    @property
    def error(self) -> str:
        """Why the trial failed, as the objective recorded it on the trial."""
        return str(self.trial.user_attrs.get(FAILURE_ATTR, "")) if self.trial else ""


@dataclass(frozen=True)
class TrialObjective:
    """The objective of a worker's trials: train one configuration, log it, score it."""

    job: SweepJob
    tracker: Tracker
    parent_run_id: str
    stop: StopRequest = field(default_factory=StopRequest)
    memo: DatasetMemo = field(default_factory=DatasetMemo)

    def for_trial(
        self, plan: TrialPlan, on_start: Callable[[], None]
    ) -> Callable[[optuna.Trial], float | list[float]]:
        """The objective of the next trial: ``plan`` applied, ``on_start`` called once asked.

        ``on_start`` releases the budget lock: others may count the trial from then on.
        """
        return partial(self._run, plan=plan, on_start=on_start)

    def _run(
        self, trial: optuna.Trial, plan: TrialPlan, on_start: Callable[[], None]
    ) -> float | list[float]:
        on_start()
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        overrides = [*self.job.space.suggest(trial), *plan.overrides]
        run_id = create_trial_run(
            self.job, self.tracker, self.parent_run_id, trial.number, overrides
        )
        trial.set_user_attr(RUN_ATTR, run_id)
        if plan.tags:
            self.tracker.set_tags(run_id, dict(plan.tags))
        try:
            self.stop.check()  # a stop asked for while the run was created fails it here
            values = self._train(trial, overrides, run_id, plan)
        except optuna.TrialPruned as pruned:
            self.tracker.set_tags(run_id, {PRUNED_TAG: str(pruned)})
            note = self._note(trial, str(pruned), overrides, run_id)
            close_trial_run(self.tracker, run_id, "pruned", f"{self._run_name(trial)} pruned", note)
            raise
        except BaseException as error:
            message = self._record_failure(run_id, error, f"{self._run_name(trial)} failed")
            trial.set_user_attr(FAILURE_ATTR, redact(message)[:2000])
            raise
        # A stop asked for from here on waits for the worker loop, after Optuna records the trial.
        objective = self.job.settings.objectives[0]
        name = scored_name(self._run_name(trial), objective, {objective: values[0]})
        note = self._note(trial, f"complete, {objective}={values[0]:.4f}", overrides, run_id)
        close_trial_run(self.tracker, run_id, "complete", name, note)
        return values[0] if len(values) == 1 else values

    def _note(self, trial: optuna.Trial, outcome: str, overrides: list[str], run_id: str) -> str:
        return trial_note(self.job.settings.study_name, trial.number, outcome, overrides, run_id)

    def _run_name(self, trial: optuna.Trial) -> str:
        return trial_run_name(self.job.settings.study_name, trial.number)

    def _train(
        self, trial: optuna.Trial, overrides: list[str], run_id: str, plan: TrialPlan
    ) -> list[float]:
        cfg = self.job.trial_config(overrides)
        dataset = self.memo.get(cfg.data, lambda: load_data(cfg))
        trial.set_user_attr(VAL_IMAGES_ATTR, len(dataset.val))
        trial.set_user_attr(
            FIDELITY_ATTR,
            f"{cfg.data.image_size} px, {cfg.trainer.epochs} epochs, "
            f"{len(dataset.train)} training images",
        )
        settings = self.job.settings
        callbacks: list[keras.callbacks.Callback] = [StopOnRequest(self.stop), *plan.callbacks]
        if settings.prunes:
            callbacks.append(
                ExplainedPruningCallback(
                    trial, settings.objectives[0], settings.pruner, len(dataset.val)
                )
            )
        floor_metrics = trial.study.user_attrs.get(FLOOR_ATTR)
        result = fit_and_log(
            cfg,
            dataset,
            self.tracker,
            run_id,
            callbacks,
            initial_epoch=plan.initial_epoch,
            floor=Floor(floor_metrics) if floor_metrics else None,
            model_name=self._run_name(trial),
            plan_artifacts=partial(self._artifacts, trial),
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

    def _artifacts(self, trial: optuna.Trial, metrics: Mapping[str, float]) -> ArtifactPlan:
        """Everything, or with ``sweep.trial_artifacts: leading`` a model for leaders only.

        The trial that ends up best led when it finished, so it always has its
        model; its figures are drawn from its logged test predictions when the
        sweep ends (``record.finalize``), once, rather than for every leader on the
        way. Several objectives have no single best: every trial gets everything.
        """
        settings = self.job.settings
        if settings.trial_artifacts == "all" or len(settings.objectives) > 1:
            return EVERYTHING
        value = metrics[result_metric(settings.objectives[0])]
        try:
            best = trial.study.best_value
        except ValueError:  # no complete trial yet: this one leads
            return ArtifactPlan(figures=False, model=True)
        leads = value >= best if settings.directions[0] == "maximize" else value <= best
        return ArtifactPlan(figures=False, model=leads)

    def _record_failure(self, run_id: str, error: BaseException, name: str) -> str:
        """Tag and close the trial's run as failed; returns the one-line reason.

        The run is closed even when the failure cannot be written down in full: an
        artifact store that refused the trial's files refuses its traceback too.
        """
        message = f"{type(error).__name__}: {error}"
        try:
            self.tracker.set_tags(run_id, {FAILURE_TAG: redact(message)[:5000]})
            if not isinstance(error, KeyboardInterrupt):
                trace = redact(traceback.format_exc())
                self.tracker.log_text(run_id, trace, "failure/traceback.txt")
        except UserError as unwritable:
            LOG.warning("run %s: its failure is not recorded in full (%s)", run_id, unwritable)
        close_trial_run(self.tracker, run_id, "failed", name)
        return message
