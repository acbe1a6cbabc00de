"""How a sweep appears in MLflow: one experiment, a parent run, one child per trial.

Tags are what the MLflow UI filters and groups on, so every run of a sweep
carries ``satsweep.sweep``, ``satsweep.backend`` and (for trials)
``satsweep.trial`` and ``satsweep.trial_state``.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna

from satsweep.search.job import SweepJob
from satsweep.search.ledger import (
    BACKEND_TAG,
    FAILURE_TAG,
    PARENT_ATTR,
    REPRODUCE_TAG,
    ROLE_TAG,
    RUN_ATTR,
    RUN_NAME_TAG,
    STATE_TAG,
    SWEEP_FILE_TAG,
    SWEEP_TAG,
    TRIAL_OVERRIDES_TAG,
    TRIAL_TAG,
)
from satsweep.spool import OFFLINE_PREFIX
from satsweep.tracking import (
    NOTE_TAG,
    TAG_PREFIX,
    Tracker,
    TrackingUnavailable,
    flatten,
    with_retries,
)

LOG = logging.getLogger(__name__)

FINAL_ROLE = "final"
PREVIOUS_STUDY_TAG = f"{TAG_PREFIX}previous_study"  # a parent run: the round it follows
RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
# One word per Optuna state, the same in tags, run names and the leaderboard.
STATE_NAMES = {
    optuna.trial.TrialState.COMPLETE: "complete",
    optuna.trial.TrialState.PRUNED: "pruned",
    optuna.trial.TrialState.FAIL: "failed",
    optuna.trial.TrialState.RUNNING: "running",
    optuna.trial.TrialState.WAITING: "waiting",
}


def trial_run_name(study_name: str, number: int) -> str:
    """A trial's run name, sortable by trial number in the MLflow UI."""
    return f"{study_name}-trial-{number:03d}"


def final_run_name(study_name: str, trial_number: int) -> str:
    """The final fit's run name, next to its sweep's trials in the MLflow UI."""
    return f"{study_name}-final-of-trial-{trial_number:03d}"


def scored_name(name: str, metric: str, metrics: dict[str, float]) -> str:
    """``quick-trial-003 val_f1_macro=0.4936``: the runs table sorts and reads at a glance."""
    value = metrics.get(metric)
    return f"{name} {metric}={value:.4f}" if value is not None else name


def sweep_tags(job: SweepJob) -> dict[str, str]:
    """The tags every run of a sweep carries, so the MLflow UI filters and groups them."""
    return {
        SWEEP_TAG: job.settings.study_name,
        BACKEND_TAG: job.settings.backend,
        SWEEP_FILE_TAG: job.file,
    }


def ensure_parent_run(job: SweepJob, study: optuna.Study, tracker: Tracker) -> str:
    """The sweep's parent run: created by the first worker, reused by the rest and on resume.

    Callers hold the study's budget lock, so two workers never both create one.
    """
    existing = study.user_attrs.get(PARENT_ATTR)
    if existing:
        tracker.client.update_run(str(existing), status="RUNNING")
        return str(existing)
    experiment_id = tracker.experiment_id(job.settings.experiment)
    run_id = tracker.create_run(
        experiment_id,
        f"{job.settings.study_name}-sweep",
        tags={**sweep_tags(job), ROLE_TAG: "sweep", **_previous_round(job)},
    )
    tracker.log_params(run_id, parent_params(job))
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _previous_round(job: SweepJob) -> dict[str, str]:
    """The study this sweep is the next round of, as a tag the UI can filter on."""
    previous = job.settings.previous
    return {PREVIOUS_STUDY_TAG: previous} if previous else {}


# What defines a study, as the parent run's params (MLflow params cannot change, so the
# budget, which a later invocation may raise, stays in the description and sweep.yaml).
PARENT_SETTINGS = ("objectives", "directions", "backend", "sampler", "pruner", "final_fit")


def parent_params(job: SweepJob) -> dict[str, Any]:
    """``sweep.sampler.name``, ``sweep.params.optimizer.lr`` (its expression), ..."""
    settings = {key: job.sweep_node[key] for key in PARENT_SETTINGS if key in job.sweep_node}
    return {
        **flatten(settings, "sweep."),
        **{f"sweep.params.{key}": value for key, value in job.space_params.items()},
    }


def create_trial_run(
    job: SweepJob,
    tracker: Tracker,
    parent_run_id: str,
    trial_number: int,
    overrides: list[str],
) -> str:
    """The trial's child run, made before training so that a crash leaves a record."""
    experiment_id = tracker.experiment_id(job.settings.experiment)
    run_id = tracker.create_run(
        experiment_id,
        trial_run_name(job.settings.study_name, trial_number),
        tags={
            **sweep_tags(job),
            ROLE_TAG: "trial",
            TRIAL_TAG: str(trial_number),
            TRIAL_OVERRIDES_TAG: " ".join(overrides),
            STATE_TAG: "running",
        },
        parent_run_id=parent_run_id,
    )
    tracker.set_tags(run_id, {REPRODUCE_TAG: f"satsweep reproduce {run_id}"})
    return run_id


def close_trial_run(
    tracker: Tracker, run_id: str, state: str, name: str | None = None, note: str | None = None
) -> None:
    """End the run with the MLflow status of ``state``, renamed to ``name`` if given.

    ``note`` becomes the run's description on its page in the MLflow UI.
    """
    tags = {STATE_TAG: state, **({RUN_NAME_TAG: name} if name else {})}
    tracker.set_tags(run_id, {**tags, **({NOTE_TAG: note} if note else {})})
    tracker.end_run(run_id, RUN_STATUS[state])


def trial_note(
    study_name: str, number: int, outcome: str, overrides: list[str], run_id: str
) -> str:
    """A trial's description in Markdown: how it ended, what was searched, how to rerun it."""
    searched = " ".join(overrides) or "(nothing: the sweep's base config)"
    return (
        f"Trial {number} of sweep `{study_name}`: {outcome}.\n\n"
        f"- Searched values: `{searched}`\n"
        f"- Reproduce: `satsweep reproduce {run_id}`\n"
    )


def close_orphaned_run(tracker: Tracker, trial: optuna.trial.FrozenTrial) -> None:
    """Close the MLflow run of a trial whose worker died while it ran."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if not run_id:
        return
    tracker.set_tags(str(run_id), {FAILURE_TAG: "the worker running this trial died"})
    close_trial_run(tracker, str(run_id), "failed")


def close_runs_of_ended_trials(
    tracker: Tracker, study: optuna.Study, experiment_id: str, parent_run_id: str
) -> None:
    """Close the trial runs still RUNNING although Optuna has ended their trials.

    A worker whose last writes to MLflow failed (an interrupt inside a database
    commit, an outage longer than the retries) ends its trial in Optuna but not
    its run. The next process to attach closes the run with the trial's state.
    """
    if parent_run_id.startswith(OFFLINE_PREFIX):
        return
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    try:
        runs = with_retries(
            lambda: tracker.client.search_runs([experiment_id], query), tracker.cfg.retry_seconds
        )
    except TrackingUnavailable as error:
        LOG.warning("MLflow store unreachable (%s): runs left open are closed later", error)
        return
    states = {trial.number: trial.state for trial in study.get_trials(deepcopy=False)}
    for run in runs:
        number = run.data.tags.get(TRIAL_TAG, "")
        state = states.get(int(number)) if number.isdigit() else None
        if state is None or not state.is_finished():  # complete, pruned or failed
            continue
        LOG.warning("trial %s has ended but its run was left open: closing it", number)
        if state == optuna.trial.TrialState.FAIL:
            tracker.set_tags(run.info.run_id, {FAILURE_TAG: "its worker stopped before closing it"})
        close_trial_run(tracker, run.info.run_id, STATE_NAMES[state])
