"""The final fit: a sweep's best configuration, retrained once with the full budget.

A sweep searches cheaply (small images, capped data, few epochs); what it answers
with is one more run of the best trial's config with ``sweep.final_fit.overrides``
on top (more data, more epochs), through the same :func:`fit_and_log` as every
trial. Its run is a child of the sweep's parent run, tagged ``satsweep.role=final``,
and its record lives on the study so ``compare`` and ``reproduce --final`` find it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import optuna

from satsweep.schema import RunConfig
from satsweep.search.attach import Attached
from satsweep.search.child_fit import fit_child_run
from satsweep.search.job import SweepJob
from satsweep.search.ledger import (
    FINAL_ATTR,
    FINAL_CLAIM_ATTR,
    FINAL_OF_TRIAL_TAG,
    FINAL_OVERRIDES_TAG,
    FINAL_PROGRESS_ATTR,
    ROLE_TAG,
    RUN_NAME_TAG,
    FinalFit,
    chosen_trial,
)
from satsweep.search.noise import Noise, measure_noise
from satsweep.search.runs import FINAL_ROLE, final_run_name, scored_name, sweep_tags
from satsweep.search.settings import test_metric
from satsweep.search.stopping import StopOnRequest, StopRequest
from satsweep.search.storage import budget_lock, owner_gone, worker_identity

LOG = logging.getLogger(__name__)


def final_config(job: SweepJob, trial: optuna.trial.FrozenTrial) -> RunConfig:
    """The trial's parameters, replayed through the space, plus the final-fit overrides."""
    overrides = job.space.suggest(optuna.trial.FixedTrial(trial.params))
    return job.trial_config([*overrides, *job.settings.final_fit.overrides])


def run_final_fit(job: SweepJob, attached: Attached, stop: StopRequest) -> FinalFit | None:
    """Retrain the best trial unless the study already has its final fit."""
    study, tracker = attached.study, attached.tracker
    trial = chosen_trial(study)
    if trial is None:
        LOG.warning("no trial completed: nothing to retrain")
        return None
    existing = _claim_or_wait(job, attached, trial, stop)
    if existing is not None:
        LOG.info("the final fit of trial %d exists: run %s", trial.number, existing.run_id)
        _measure_noise_once(job, attached, trial, stop)
        return existing
    cfg = final_config(job, trial)
    LOG.info("final fit of trial %d", trial.number)
    name = final_run_name(job.settings.study_name, trial.number)
    callbacks = [StopOnRequest(stop), ReportProgress(study)]
    run_id, result = fit_child_run(job, attached, cfg, name, _final_tags(job, trial), callbacks)
    tracker.set_tags(
        run_id,
        {RUN_NAME_TAG: scored_name(name, test_metric(job.settings.objectives[0]), result.metrics)},
    )
    tracker.end_run(run_id, "FINISHED")
    advice = {finding.rule: list(finding.config_keys) for finding in result.diagnosis}
    fidelity = f"{cfg.data.image_size} px for {cfg.trainer.epochs} epochs"
    if cfg.data.train_share < 1:  # the trials' cheap fidelity, kept: the answer says so
        fidelity += f" on {cfg.data.train_share:.0%} of the training images"
    final = FinalFit(trial.number, run_id, _plain(result.metrics), advice, fidelity)
    # the workers ran the repeats beside this fit: gather them (and run what is missing)
    _measure_noise_once(job, attached, trial, stop)
    study.set_user_attr(FINAL_ATTR, final.__dict__)
    return final


def _measure_noise_once(
    job: SweepJob, attached: Attached, trial: optuna.trial.FrozenTrial, stop: StopRequest
) -> None:
    """The trial's noise band, unless the study has it (or the sweep asks for none)."""
    noise = Noise.of(attached.study)
    if job.settings.noise.repeats and (noise is None or noise.trial != trial.number):
        measure_noise(job, attached, trial, stop)


class ReportProgress(keras.callbacks.Callback):
    """Each epoch of the final fit, told on the study: the launcher shows how far it is."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__()
        self.study = study
        self.epoch_started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Start the epoch's clock."""
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Tell the study the epochs done, of how many, and this one's seconds."""
        seconds = time.perf_counter() - self.epoch_started
        epochs = int(self.params.get("epochs") or epoch + 1)
        self.study.set_user_attr(
            FINAL_PROGRESS_ATTR, {"epoch": epoch + 1, "epochs": epochs, "epoch_seconds": seconds}
        )


CLAIM_POLL_SECONDS = 5.0


def _claim_or_wait(
    job: SweepJob, attached: Attached, trial: optuna.trial.FrozenTrial, stop: StopRequest
) -> FinalFit | None:
    """None once this process has claimed the final fit; else the record another one made.

    Two launchers of one study (or a launcher and the last hand-started worker)
    reach the final fit together: one trains it, the other waits for its record,
    so both answer with the same model. A claim whose owner has died is taken over.
    """
    study, said = attached.study, False
    while True:
        with budget_lock(job.base.storage, job.settings.study_name):
            existing = FinalFit.of(study)
            if existing is not None and existing.trial == trial.number:
                return existing
            claim = study.user_attrs.get(FINAL_CLAIM_ATTR) or {}
            if claim.get("trial") != trial.number or owner_gone(str(claim.get("owner", ""))):
                study.set_user_attr(
                    FINAL_CLAIM_ATTR, {"trial": trial.number, "owner": worker_identity()}
                )
                return None
        if not said:
            LOG.info("the final fit of trial %d runs in %s: waiting for it", trial.number, claim)
            said = True
        stop.check()
        time.sleep(CLAIM_POLL_SECONDS)


def _final_tags(job: SweepJob, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {
        **sweep_tags(job),
        ROLE_TAG: FINAL_ROLE,
        FINAL_OF_TRIAL_TAG: str(trial.number),
        FINAL_OVERRIDES_TAG: " ".join(job.settings.final_fit.overrides),
    }


def _plain(metrics: dict[str, float]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
