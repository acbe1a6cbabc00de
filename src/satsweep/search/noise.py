"""How much a trial's score moves when only the seed changes: the sweep's noise band.

A 0.01 gap between two trials teaches nothing if retraining either with another
seed moves its score by 0.02. After the search, the best trial's configuration is
trained again with ``sweep.noise.repeats`` other seeds, on the same split and at
the search's fidelity. The spread of those scores and the trial's own gives the
band: trials whose objective is within it of the best are tied, and no lesson is
drawn from their differences.

When the search ends, each worker takes repeats no other has claimed
(:func:`share_repeats`), so they run side by side on the workers' threads while the
final fit trains; its process then gathers them and runs only what is left
(:func:`measure_noise`).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict
from typing import Any

import optuna

from satsweep.metrics import sampling_sd
from satsweep.schema import RunConfig
from satsweep.search.attach import Attached
from satsweep.search.child_fit import fit_child_run
from satsweep.search.job import SweepJob
from satsweep.search.ledger import NOISE_ATTR, ROLE_TAG, VAL_IMAGES_ATTR, Noise, chosen_trial
from satsweep.search.runs import sweep_tags
from satsweep.search.settings import result_metric
from satsweep.search.stopping import StopOnRequest, StopRequest
from satsweep.search.storage import budget_lock, on_this_host, owner_gone, worker_identity
from satsweep.training import ArtifactPlan

LOG = logging.getLogger(__name__)
NOISE_ROLE = "noise"
REPEAT_ATTR = "satsweep_noise_repeat"  # study: f"{REPEAT_ATTR}:{trial}:{seed}" -> {owner, value}
NO_ARTIFACTS = ArtifactPlan(figures=False, model=False)  # a repeat is read for its score


def repeat_config(job: SweepJob, trial: optuna.trial.FrozenTrial, seed: int) -> RunConfig:
    """The trial's config with another training seed, on the very same split."""
    overrides = job.space.suggest(optuna.trial.FixedTrial(trial.params))
    split_seed = job.base.data.split.seed
    return job.trial_config([*overrides, f"data.split.seed={split_seed}", f"seed={seed}"])


def noise_seeds(job: SweepJob) -> list[int]:
    """The seeds of the repeats: the next ``sweep.noise.repeats`` after the sweep's own."""
    return [job.base.seed + offset for offset in range(1, job.settings.noise.repeats + 1)]


def share_repeats(job: SweepJob, attached: Attached, stop: StopRequest) -> int:
    """Run the best trial's repeats that no other process has claimed; how many ran here.

    A worker calls this when every trial has finished and none runs, so the best
    trial is the one the final fit retrains. A repeat that fails is left for the
    final fit, which runs what is missing.
    """
    trial = chosen_trial(attached.study)
    if trial is None or not job.settings.noise.repeats:
        return 0
    objective = job.settings.objectives[0]
    ran = 0
    while (seed := _claim(job, attached, trial.number)) is not None:
        stop.check()
        key = _repeat_key(trial.number, seed)
        try:
            value = _repeat(job, attached, trial, seed, result_metric(objective), stop)
        except Exception:  # a fault in a repeat fails the repeat, not the worker
            attached.study.set_user_attr(
                key, {"owner": worker_identity(), "value": None, "failed": True}
            )
            LOG.exception("the repeat of trial %d with seed %d failed", trial.number, seed)
            stop.check()  # a stop request that ended the repeat ends the worker too
            continue
        attached.study.set_user_attr(key, {"owner": worker_identity(), "value": value})
        ran += 1
    return ran


def measure_noise(
    job: SweepJob, attached: Attached, trial: optuna.trial.FrozenTrial, stop: StopRequest
) -> Noise:
    """``trial``'s objective under every noise seed: the workers' repeats, then the rest."""
    objective = job.settings.objectives[0]
    seeds = noise_seeds(job)
    done = _finished_repeats(attached, job, trial.number, stop)
    values = [float(trial.values[0])]
    for seed in seeds:
        if seed not in done:
            stop.check()
            done[seed] = _repeat(job, attached, trial, seed, result_metric(objective), stop)
        values.append(done[seed])
    images = int(trial.user_attrs.get(VAL_IMAGES_ATTR, 0))
    resolution = sampling_sd(objective, statistics.fmean(values), images)
    noise = Noise(trial.number, seeds, values, resolution, images)
    LOG.info(
        "seed noise of trial %d: %s = %s (%s)",
        trial.number,
        objective,
        ", ".join(f"{v:.4f}" for v in values),
        noise.spread(),
    )
    attached.study.set_user_attr(NOISE_ATTR, asdict(noise))
    return noise


def _repeat_key(trial: int, seed: int) -> str:
    return f"{REPEAT_ATTR}:{trial}:{seed}"


def _claim(job: SweepJob, attached: Attached, trial: int) -> int | None:
    """A seed of ``trial`` whose repeat is unclaimed (or whose claimant died), now ours."""
    with budget_lock(job.base.storage, job.settings.study_name):
        records = attached.study.user_attrs
        for seed in noise_seeds(job):
            key = _repeat_key(trial, seed)
            record: dict[str, Any] | None = records.get(key)
            if record is None or _abandoned(record):
                attached.study.set_user_attr(key, {"owner": worker_identity(), "value": None})
                return seed
    return None


def _abandoned(record: dict[str, Any]) -> bool:
    """A claim without a value whose process has died: free to take."""
    return record["value"] is None and not record.get("failed") and owner_gone(record["owner"])


REPEAT_POLL_SECONDS = 1.0


def _finished_repeats(
    attached: Attached, job: SweepJob, trial: int, stop: StopRequest
) -> dict[int, float]:
    """The repeats of ``trial`` that workers finished, after waiting for those that a live
    process on this host still runs. One claimed on another host is not waited for: a
    worker there that died would hold the final fit forever; what is missing runs here."""
    keys = {seed: _repeat_key(trial, seed) for seed in noise_seeds(job)}
    while any(_running_here(attached.study.user_attrs.get(key)) for key in keys.values()):
        stop.check()
        time.sleep(REPEAT_POLL_SECONDS)
    records = attached.study.user_attrs
    found = {seed: records.get(key) for seed, key in keys.items()}
    return {
        seed: float(record["value"])
        for seed, record in found.items()
        if record is not None and record["value"] is not None
    }


def _running_here(record: dict[str, Any] | None) -> bool:
    """A claim without a value, held by a process of this host that still runs."""
    if record is None or record["value"] is not None or record.get("failed"):
        return False
    return on_this_host(record["owner"]) and not owner_gone(record["owner"])


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
