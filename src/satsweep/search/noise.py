"""How much a trial's score moves when only the seed changes: the sweep's noise band.

A 0.01 gap between two trials teaches nothing if retraining either with another
seed moves its score by 0.02. After the search, the best trial's configuration is
trained again with ``sweep.noise.repeats`` other seeds, on the same split and at
the search's fidelity. The spread of those scores and the trial's own gives the
band: trials whose objective is within it of the best are tied, and no lesson is
drawn from their differences.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import optuna

from satsweep.schema import RunConfig
from satsweep.search.attach import Attached
from satsweep.search.child_fit import fit_child_run
from satsweep.search.job import SweepJob
from satsweep.search.ledger import NOISE_ATTR, ROLE_TAG, Noise
from satsweep.search.runs import sweep_tags
from satsweep.search.settings import result_metric
from satsweep.search.stopping import StopOnRequest, StopRequest
from satsweep.training import ArtifactPlan

LOG = logging.getLogger(__name__)
NOISE_ROLE = "noise"
NO_ARTIFACTS = ArtifactPlan(figures=False, model=False)  # a repeat is read for its score


def repeat_config(job: SweepJob, trial: optuna.trial.FrozenTrial, seed: int) -> RunConfig:
    """The trial's config with another training seed, on the very same split."""
    overrides = job.space.suggest(optuna.trial.FixedTrial(trial.params))
    split_seed = job.base.data.split.seed
    return job.trial_config([*overrides, f"data.split.seed={split_seed}", f"seed={seed}"])


def measure_noise(
    job: SweepJob, attached: Attached, trial: optuna.trial.FrozenTrial, stop: StopRequest
) -> Noise:
    """Train ``trial``'s configuration with ``sweep.noise.repeats`` other seeds; record it."""
    objective = job.settings.objectives[0]
    seeds = [job.base.seed + offset for offset in range(1, job.settings.noise.repeats + 1)]
    values = [float(trial.values[0])]
    for seed in seeds:
        stop.check()
        values.append(_repeat(job, attached, trial, seed, result_metric(objective), stop))
    noise = Noise(trial.number, seeds, values)
    LOG.info(
        "seed noise of trial %d: %s = %s (sd %.4f)",
        trial.number,
        objective,
        ", ".join(f"{v:.4f}" for v in values),
        noise.sd,
    )
    attached.study.set_user_attr(NOISE_ATTR, asdict(noise))
    return noise


def _repeat(
    job: SweepJob,
    attached: Attached,
    trial: optuna.trial.FrozenTrial,
    seed: int,
    metric: str,
    stop: StopRequest,
) -> float:
    name = f"{job.settings.study_name}-noise-of-trial-{trial.number:03d}-seed-{seed}"
    run_id, result = fit_child_run(
        job,
        attached,
        repeat_config(job, trial, seed),
        name,
        {**sweep_tags(job), ROLE_TAG: NOISE_ROLE},
        [StopOnRequest(stop)],
        plan_artifacts=lambda metrics: NO_ARTIFACTS,
    )
    attached.tracker.end_run(run_id, "FINISHED")
    return float(result.metrics[metric])
