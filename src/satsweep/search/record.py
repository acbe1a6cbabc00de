"""What a sweep leaves behind: the leaderboard, Optuna's plots, and the best trial.

The leaderboard joins Optuna's record (state, objective values, parameters) with
the metrics MLflow holds for each trial's run, so ``satsweep compare`` and the
parent run's ``leaderboard.csv`` show the same table.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import pandas as pd
from optuna.trial import TrialState

from satsweep.analysis.errors import ERROR_ANALYSIS
from satsweep.baseline import FLOOR_PREFIX, cached_floor
from satsweep.data import Dataset, load_data
from satsweep.redact import redact_tree
from satsweep.run_figures import draw_missing_figures
from satsweep.schema import as_plain
from satsweep.search.attach import Attached
from satsweep.search.description import sweep_description
from satsweep.search.job import SweepJob
from satsweep.search.ledger import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    FINAL_OF_TRIAL_TAG,
    FINAL_RUN_TAG,
    FLOOR_ATTR,
    FLOOR_METHOD_TAG,
    LAUNCHER_ATTR,
    PARENT_ATTR,
    TRIAL_COUNT_TAG,
    TRIAL_TAG,
    FinalFit,
    Noise,
    tied_with_best,
    trial_run_id,
)
from satsweep.search.lessons import previous_round, sweep_lessons
from satsweep.search.plots import log_plots
from satsweep.search.runs import STATE_NAMES
from satsweep.search.settings import result_metric
from satsweep.tracking import NOTE_TAG, Tracker, TrackingUnavailable, with_retries

LOG = logging.getLogger(__name__)
T = TypeVar("T")
# Leaderboard rows that are not trials: the answer and the floor of its own split (first),
# the floor of the trials' split (last). Each floor compares only with the rows its split scored.
FINAL_ROW, FINAL_FLOOR_ROW, FLOOR_ROW = "final", "final floor", "floor"
SUMMARY_ROWS = (FINAL_ROW, FINAL_FLOOR_ROW, FLOOR_ROW)
# Final values from each trial's MLflow run, shown beside the objectives.
KEY_METRICS = (
    "final_val_f1_macro",
    "final_val_accuracy",
    "test_f1_macro",
    "test_accuracy",
    "epochs_run",
)
PRUNED_AT = "pruned_at_epoch"
TIED = "tied"  # a complete trial within the noise band of the best
LESSONS = "lessons.md"  # the parent run's artifact: what mattered, in words
# What the parent run repeats of its best trial, under best_trial/.
BEST_TRIAL_ARTIFACTS = (
    "config.yaml",
    "confusion_matrix.png",
    "per_class_report.csv",
    ERROR_ANALYSIS,
)


def leaderboard(
    study: optuna.Study, objectives: list[str], tracker: Tracker | None
) -> pd.DataFrame:
    """One row per trial: finished trials first, best first by the first objective.

    Optuna gives a pruned trial the value of its last report; that is an epoch's
    value, not a result, so it does not stand in the objective's column (the
    trial's ``pruned_at_epoch`` does).
    """
    runs: dict[int, dict[str, float]] = (
        _readable(lambda: _trial_metrics(study, tracker), {}) if tracker else {}
    )
    rows = []
    noise = Noise.of(study)
    tied = set(tied_with_best(study, noise)) if noise else set()
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": trial.number, "state": STATE_NAMES[trial.state]}
        complete = trial.state == TrialState.COMPLETE and trial.values
        values = trial.values if complete else [None] * len(objectives)
        row.update(dict(zip(objectives, values, strict=True)))
        if noise:  # within the seed noise of the best: no lesson in their differences
            row[TIED] = "tied" if trial.number in tied else None
        for key in KEY_METRICS:
            if key not in (*objectives, *map(result_metric, objectives)):
                row[key] = runs.get(trial.number, {}).get(key)
        pruned = trial.state == TrialState.PRUNED and trial.intermediate_values
        row[PRUNED_AT] = max(trial.intermediate_values) + 1 if pruned else None
        row["seconds"] = trial.duration.total_seconds() if trial.duration else None
        row.update(trial.params)
        row["mlflow_run_id"] = trial_run_id(study, trial)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    ascending = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    table = table.sort_values(objectives[0], ascending=ascending, na_position="last", kind="stable")
    first = _final_rows(study, objectives)
    floor = study.user_attrs.get(FLOOR_ATTR)
    last = [_summary_row(FLOOR_ROW, "trials' split", objectives, dict(floor))] if floor else []
    rows = [*first, *table.to_dict("records"), *last]
    return pd.DataFrame(rows, columns=table.columns)


def _final_rows(study: optuna.Study, objectives: list[str]) -> list[dict[str, Any]]:
    """The final model (named by the trial it retrained, with its parameters), then its floor.

    The final fit trains and tests on its own (usually larger) split, so the floor
    beside it is that split's, logged with the final run as ``floor_*``.
    """
    final = FinalFit.of(study)
    if final is None:
        return []
    trials = study.get_trials(deepcopy=False)
    retrained = next((t for t in trials if t.number == final.trial), None)
    # A final fit logged result names (final_val_*); the floor keeps the split's own.
    named = {key: final.metrics.get(result_metric(key)) for key in (*objectives, *KEY_METRICS)}
    state = f"of trial {final.trial}" + (f" at {final.fidelity}" if final.fidelity else "")
    row = _summary_row(FINAL_ROW, state, objectives, named)
    row.update(seconds=final.metrics.get("seconds"), mlflow_run_id=final.run_id)
    row.update(retrained.params if retrained else {})
    own_floor = {
        key[len(FLOOR_PREFIX) :]: value
        for key, value in final.metrics.items()
        if key.startswith(FLOOR_PREFIX)
    }
    floor_row = _summary_row(FINAL_FLOOR_ROW, "final's split", objectives, own_floor)
    return [row, *([floor_row] if own_floor else [])]


def _summary_row(
    kind: str, state: str, objectives: list[str], metrics: dict[str, Any]
) -> dict[str, Any]:
    """A row that is not a trial: ``kind`` in the trial column, what it is in the state's."""
    row: dict[str, Any] = {"trial": kind, "state": state}
    row.update({key: metrics.get(key) for key in (*objectives, *KEY_METRICS)})
    row.setdefault("seconds", metrics.get("seconds"))
    row.setdefault("mlflow_run_id", "")
    return row


def _trial_metrics(study: optuna.Study, tracker: Tracker) -> dict[int, dict[str, float]]:
    parent = study.user_attrs.get(PARENT_ATTR)
    if not parent:
        return {}
    experiment_id = tracker.client.get_run(str(parent)).info.experiment_id
    runs = tracker.client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=50_000
    )
    return {int(r.data.tags[TRIAL_TAG]): r.data.metrics for r in runs if TRIAL_TAG in r.data.tags}


def _readable(read: Callable[[], T], fallback: T) -> T:
    """A read from the MLflow store, or ``fallback`` while the store is unreachable."""
    try:
        return with_retries(read, delays=(1.0,))
    except TrackingUnavailable as error:
        LOG.warning("MLflow store unreachable (%s): the parent run's record is partial", error)
        return fallback


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's best trials: one for a single objective, the Pareto front for several."""
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return study.best_trials if len(study.directions) > 1 else [study.best_trial]


def record_floor_once(job: SweepJob, attached: Attached, dataset: Dataset) -> None:
    """The no-learning floor, on the study (trials compare themselves to it) and the parent run."""
    study = attached.study
    if FLOOR_ATTR in study.user_attrs:
        return
    floor = cached_floor(dataset, job.base.seed, Path(job.base.paths.cache))
    LOG.info("no-learning floor: test_f1_macro=%.4f", floor.metrics["test_f1_macro"])
    study.set_user_attr(FLOOR_ATTR, floor.metrics)
    attached.tracker.log_metrics(attached.parent_run_id, floor.logged, step=0)
    attached.tracker.set_tags(attached.parent_run_id, {FLOOR_METHOD_TAG: floor.method})


def finalize(job: SweepJob, attached: Attached, status: str, dataset: Dataset) -> pd.DataFrame:
    """Log the sweep's record to its parent run and close it with ``status``.

    ``dataset`` is the sweep's: the best trial's figures are drawn from it when
    the trial used the same data.
    """
    attached.study.set_user_attr(LAUNCHER_ATTR, None)  # no launcher watches it any more
    try:
        table = _record(job, attached, dataset)
    except (
        BaseException
    ):  # an artifact store that cannot be written: the run is closed all the same
        attached.tracker.end_run(
            attached.parent_run_id, "KILLED" if status == "KILLED" else "FAILED"
        )
        raise
    attached.tracker.end_run(attached.parent_run_id, status)
    return table


def _record(job: SweepJob, attached: Attached, dataset: Dataset) -> pd.DataFrame:
    """The leaderboard, settings, best trial, final fit, description and plots of the sweep."""
    study, tracker, parent_run_id = attached.study, attached.tracker, attached.parent_run_id
    objectives = job.settings.objectives
    table = leaderboard(study, objectives, tracker)
    tracker.log_text(parent_run_id, table.to_csv(index=False), "leaderboard.csv")
    tracker.log_table(parent_run_id, table, "leaderboard.json")
    tracker.log_yaml(parent_run_id, redact_tree(job.sweep_node), "sweep.yaml")
    tracker.log_yaml(parent_run_id, redact_tree(as_plain(job.base)), "base_config.yaml")
    best = best_trials(study)
    if best:
        top = best[0]
        tracker.set_tags(
            parent_run_id,
            {
                BEST_TRIAL_TAG: top.number,
                BEST_RUN_TAG: trial_run_id(study, top),
                **{f"best.{key}": value for key, value in top.params.items()},
            },
        )
        best_run = trial_run_id(study, top)
        _readable(lambda: _draw_figures(job, top, tracker, best_run, dataset), None)
        _readable(lambda: _copy_error_analysis(tracker, best_run, parent_run_id), None)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
        tracker.log_metrics(
            parent_run_id,
            {f"best_{name}": value for name, value in zip(objectives, top.values, strict=True)},
            step=finished,
        )
    _log_objective_by_trial(study, objectives, tracker, parent_run_id)
    noise = Noise.of(study)
    if noise is not None:
        tracker.log_metrics(
            parent_run_id,
            {
                f"noise_sd_{objectives[0]}": noise.sd,
                f"noise_sampling_sd_{objectives[0]}": noise.sampling_sd,
                f"noise_band_{objectives[0]}": noise.band,
            },
            step=0,
        )
    final = FinalFit.of(study)
    if final is not None:
        tracker.set_tags(
            parent_run_id,
            {FINAL_RUN_TAG: final.run_id, FINAL_OF_TRIAL_TAG: final.trial},
        )
        tracker.log_metrics(
            parent_run_id,
            {
                f"final_{k.removeprefix('final_')}": v
                for k, v in final.metrics.items()
                if k.startswith(("final_val_", "test_"))
            },
            step=0,
        )
    trials = table[~table["trial"].isin(SUMMARY_ROWS)] if not table.empty else table
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    tracker.set_tags(parent_run_id, {f"{TRIAL_COUNT_TAG}{k}": v for k, v in counts.items()})
    previous = previous_round(attached.storage, job.settings.previous, objectives[0])
    lessons = sweep_lessons(study, objectives[0], noise, previous)
    tracker.log_text(parent_run_id, lessons, LESSONS)
    _describe(job, tracker, parent_run_id, table, trials, noise, lessons)
    log_plots(study, objectives, tracker, parent_run_id)
    return table


def _log_objective_by_trial(
    study: optuna.Study, objectives: list[str], tracker: Tracker, parent_run_id: str
) -> None:
    """Each complete trial's objective on the parent run, at step = trial number.

    MLflow draws it as the sweep's history chart on the parent's page. Each point
    keeps its trial's completion time, so a resumed sweep's finalize adds none twice.
    """
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        done = trial.datetime_complete
        tracker.log_metrics(
            parent_run_id,
            {f"trial_{name}": value for name, value in zip(objectives, trial.values, strict=True)},
            step=trial.number,
            timestamp_ms=int(done.timestamp() * 1000) if done else None,
        )


def _describe(
    job: SweepJob,
    tracker: Tracker,
    parent_run_id: str,
    table: pd.DataFrame,
    trials: pd.DataFrame,
    noise: Noise | None,
    lessons: str,
) -> None:
    """The sweep's Markdown summary on its parent run and on its experiment."""
    experiment_id = tracker.experiment_id(job.settings.experiment)
    complete = trials[trials["state"] == "complete"] if not trials.empty else trials
    finals = table[table["trial"] == "final"] if not table.empty else table
    note = sweep_description(
        job,
        experiment_id,
        trials,
        complete.iloc[0].to_dict() if not complete.empty else None,
        finals.iloc[0].to_dict() if not finals.empty else None,
        noise,
        lessons,
    )
    note += "\n" + lessons
    tracker.set_tags(parent_run_id, {NOTE_TAG: note})
    tracker.set_experiment_tags(experiment_id, {NOTE_TAG: note})


def _draw_figures(
    job: SweepJob,
    trial: optuna.trial.FrozenTrial,
    tracker: Tracker,
    run_id: str,
    dataset: Dataset,
) -> None:
    """The best trial's figures, which a sweep draws once, when it ends (``run_figures``).

    Figures are for reading: one that cannot be drawn (the trial's images moved,
    its predictions unreadable) is a warning, never a sweep without its record.
    """
    if not run_id:
        return
    try:
        cfg = job.trial_config(job.space.suggest(trial))
        same_data = cfg.data == job.base.data
        load = (lambda: dataset) if same_data else (lambda: load_data(cfg))
        drawn = draw_missing_figures(tracker, run_id, load, cfg.tracking.error_analysis)
    except TrackingUnavailable:
        raise  # _readable's to report
    except Exception as error:  # any failure to draw costs the figures alone
        LOG.warning("the best trial's figures were not drawn: %s", error)
        return
    if drawn:
        LOG.info("drew the figures of the best trial, %d", trial.number)


def _copy_error_analysis(tracker: Tracker, trial_run_id: str, parent_run_id: str) -> None:
    """The best trial's evaluation, repeated in the parent run where users look first."""
    if not trial_run_id:
        return
    present = {a.path for a in tracker.client.list_artifacts(trial_run_id)}
    with tempfile.TemporaryDirectory() as folder:
        for path in (p for p in BEST_TRIAL_ARTIFACTS if p in present):
            local = Path(tracker.client.download_artifacts(trial_run_id, path, folder))
            if local.is_dir():
                tracker.log_directory(parent_run_id, local, f"best_trial/{path}")
            else:
                tracker.log_bytes(parent_run_id, local.read_bytes(), f"best_trial/{path}")
