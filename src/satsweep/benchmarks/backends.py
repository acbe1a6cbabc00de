"""``satsweep compare-backends``: which search method finds better models in the same time?

Every method of ``sweep.compare.methods`` (by default Optuna TPE with median
pruning, Optuna random search without pruning, KerasTuner Hyperband and
KerasTuner Bayesian optimisation) searches the sweep file's space on the same
data for the same wall-clock budget, once per seed. Each is an ordinary sweep
(its own study and worker process, its trials child runs in MLflow), so every
trial can be inspected and reproduced like any other.

Only trials that finished within the budget count: a method cannot win by
overrunning it. Methods take turns in a different order for each seed, so none
always runs first on a cold disk cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import matplotlib
import optuna
import pandas as pd
from matplotlib.figure import Figure
from optuna.trial import TrialState
from pydantic import Field, ValidationError, model_validator

from satsweep.config import describe_validation_error
from satsweep.console import Progress, leaderboard_table, wide_console
from satsweep.data import load_data
from satsweep.errors import UserError
from satsweep.figures import subplots
from satsweep.redact import redact_tree
from satsweep.schema import Strict
from satsweep.search.crew import Crew
from satsweep.search.job import SweepJob, prepare_job
from satsweep.search.launcher import launch
from satsweep.search.ledger import (
    METHOD_TAG,
    PARENT_ATTR,
    ROLE_TAG,
    SWEEP_FILE_TAG,
    load_study,
    trial_run_id,
)
from satsweep.search.settings import test_metric
from satsweep.search.storage import open_storage
from satsweep.tracking import Tracker

LOG = logging.getLogger(__name__)
NEAR_BEST = 0.95  # "time to 95% of the best value any method found"


class CompareSettings(Strict):
    """``satsweep compare-backends``: search methods raced on equal wall-clock budgets."""

    budget: Annotated[float, Field(gt=0)] | None  # seconds of search per method and seed
    trials: Annotated[int, Field(gt=0)] | None  # or: finished trials per method and seed
    seeds: Annotated[list[int], Field(min_length=1)]
    methods: Annotated[dict[str, list[str]], Field(min_length=2)]  # name -> Hydra overrides

    @model_validator(mode="after")
    def _one_budget(self) -> CompareSettings:
        if (self.budget is None) == (self.trials is None):
            raise ValueError(
                "set one of sweep.compare.budget (seconds) and sweep.compare.trials "
                "(an equal-trials race), and the other to null"
            )
        return self

    @property
    def label(self) -> str:
        """The race's budget in words, for logs and titles."""
        return f"{self.budget:g}s" if self.budget is not None else f"{self.trials} trials"


def compare_settings(job: SweepJob) -> CompareSettings:
    """The sweep file's ``sweep.compare`` node, validated: the race's methods and budget."""
    try:
        return CompareSettings.model_validate(job.settings.compare)
    except ValidationError as error:
        raise UserError(
            f"{job.file}: {describe_validation_error(error, 'sweep.compare')}"
        ) from error


@dataclass(frozen=True)
class MethodRun:
    """One method's search under one seed, read back from its study and MLflow runs."""

    method: str
    seed: int
    study_name: str
    wall_seconds: float
    trials: int  # finished (complete or pruned) within the budget
    best: float | None  # best objective of the complete trials within the budget
    best_test: float | None  # the test-split twin of the objective, for the same trial
    curve: list[tuple[float, float]]  # (seconds since the search began, best so far)


@dataclass(frozen=True)
class Comparison:
    """One race: its MLflow run, every method's searches, and the summary table."""

    run_id: str  # the MLflow comparison run
    runs: list[MethodRun]
    table: pd.DataFrame  # one row per method


def compare_backends(overrides: Sequence[str]) -> Comparison:
    """Race the sweep's methods; log and print the comparison."""
    job = prepare_job(overrides)
    settings = compare_settings(job)
    if job.settings.is_multi_objective:
        raise UserError(
            "compare-backends ranks methods by one objective: keep one in sweep.objectives"
        )
    label = f"{job.settings.study_name}-compare-{datetime.now():%Y%m%d-%H%M%S}"
    experiment = f"{job.settings.study_name}-compare"
    jobs = {
        (name, seed): _method_job(overrides, extra, label, name, seed, experiment, job)
        for seed in settings.seeds
        for name, extra in settings.methods.items()
    }  # every method's config is checked before the first one runs
    tracker = Tracker(job.base.tracking)
    tracker.check_reachable()
    run_id = tracker.create_run(
        tracker.experiment_id(experiment),
        label,
        tags={ROLE_TAG: "comparison", SWEEP_FILE_TAG: job.file},
    )
    tracker.log_params(
        run_id,
        {
            "budget_seconds": settings.budget,
            "budget_trials": settings.trials,
            "seeds": settings.seeds,
            "objective": job.settings.objectives[0],
            **{f"method.{name}": " ".join(extra) for name, extra in settings.methods.items()},
        },
    )
    runs: list[MethodRun] = []
    try:
        for index, seed in enumerate(settings.seeds):
            for name in _turns(list(settings.methods), index):
                runs.append(_race(jobs[name, seed], name, seed, tracker, run_id))
    except BaseException:
        tracker.end_run(run_id, "KILLED")
        raise
    table = summarise(runs, job.settings.directions[0] == "maximize")
    _log(tracker, run_id, job, runs, table)
    tracker.end_run(run_id, "FINISHED")
    console = wide_console()
    console.print(
        leaderboard_table(table, f"{label}: {settings.label} per method and seed", console.width)
    )
    console.print(f"comparison run: {run_id} (MLflow experiment {experiment})")
    return Comparison(run_id, runs, table)


def _method_job(
    overrides: Sequence[str],
    extra: Sequence[str],
    label: str,
    name: str,
    seed: int,
    experiment: str,
    base: SweepJob,
) -> SweepJob:
    study = f"{label}-{name}-s{seed}"
    fixed = [
        *overrides,
        *extra,
        f"sweep.study_name={study}",
        f"sweep.experiment={experiment}",
        *_budget(compare_settings(base)),
        "sweep.workers=1",
        "sweep.final_fit.enabled=false",  # the race compares searches, not final fits
        f"sweep.sampler.seed={seed}",
        f"seed={seed}",
    ]
    try:
        return prepare_job(fixed)
    except UserError as error:
        raise UserError(f"sweep.compare.methods.{name}: {error}") from error


def _budget(compare: CompareSettings) -> list[str]:
    """Each method's budget: wall-clock seconds, or a number of finished trials."""
    if compare.budget is not None:
        return [f"sweep.timeout={compare.budget}", "sweep.n_trials=null"]
    return [f"sweep.n_trials={compare.trials}", "sweep.timeout=null"]


def _turns(methods: list[str], index: int) -> list[str]:
    shift = index % len(methods)
    return methods[shift:] + methods[:shift]


def _race(job: SweepJob, name: str, seed: int, tracker: Tracker, run_id: str) -> MethodRun:
    LOG.info("method %s, seed %d: %s of search", name, seed, compare_settings(job).label)
    started = time.monotonic()
    code = launch(job, load_data(job.base), Crew.start(job, 1), Progress).code
    wall = time.monotonic() - started
    if code == 130:
        raise KeyboardInterrupt
    study = load_study(
        open_storage(job.base.storage), job.settings.study_name, job.base.storage.url
    )
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:  # nest the method's sweep under the comparison in the MLflow UI
        tracker.set_tags(str(parent), {"mlflow.parentRunId": run_id, METHOD_TAG: name})
    return read_method_run(study, name, seed, wall, job, tracker)


def read_method_run(
    study: optuna.Study, name: str, seed: int, wall: float, job: SweepJob, tracker: Tracker
) -> MethodRun:
    """What a method reached within the budget, from its study's trial times."""
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts:
        return MethodRun(name, seed, study.study_name, wall, 0, None, None, [])
    began = min(starts)
    budget = compare_settings(job).budget
    deadline = began + timedelta(seconds=budget) if budget is not None else None
    within = sorted(
        (
            t
            for t in trials
            if t.datetime_complete and (deadline is None or t.datetime_complete <= deadline)
        ),
        key=_completed_at,
    )
    maximize = job.settings.directions[0] == "maximize"
    curve, best_trial = [], None
    for trial in within:
        if trial.state != TrialState.COMPLETE:
            continue
        if best_trial is None or _better(trial.values[0], best_trial.values[0], maximize):
            best_trial = trial
            seconds = (_completed_at(trial) - began).total_seconds()
            curve.append((seconds, trial.values[0]))
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in within)
    best = best_trial.values[0] if best_trial else None
    best_test = _test_twin(study, best_trial, job.settings.objectives[0], tracker)
    return MethodRun(name, seed, study.study_name, wall, finished, best, best_test, curve)


def _better(value: float, than: float, maximize: bool) -> bool:
    return value > than if maximize else value < than


def _test_twin(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial | None,
    objective: str,
    tracker: Tracker,
) -> float | None:
    """``test_f1_macro`` for ``val_f1_macro``: how the chosen model does on unseen data."""
    if trial is None or not objective.startswith("val_"):
        return None
    metrics = tracker.client.get_run(trial_run_id(study, trial)).data.metrics
    return metrics.get(test_metric(objective))


def summarise(runs: Sequence[MethodRun], maximize: bool) -> pd.DataFrame:
    """One row per method: means over seeds, and the time to come near the overall best."""
    bests = [r.best for r in runs if r.best is not None]
    if not bests:
        raise UserError("no method completed a trial within the budget: raise sweep.compare.budget")
    overall = max(bests) if maximize else min(bests)
    target = overall * NEAR_BEST if maximize else overall / NEAR_BEST
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        reached = [_time_to(r.curve, target, maximize) for r in mine]
        hits = [t for t in reached if t is not None]
        frame = pd.DataFrame([r.__dict__ for r in mine])
        rows.append(
            {
                "method": method,
                "best_val": frame["best"].mean(),
                "best_val_std": frame["best"].std(ddof=0),
                "its_test": frame["best_test"].mean(),
                "trials": frame["trials"].mean(),
                "wall_seconds": frame["wall_seconds"].mean(),
                "seconds_to_95pct": pd.Series(hits).median() if hits else None,
                "seeds_reaching_95pct": f"{len(hits)}/{len(mine)}",
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("best_val", ascending=not maximize, na_position="last").reset_index(
        drop=True
    )


def _time_to(curve: list[tuple[float, float]], target: float, maximize: bool) -> float | None:
    for seconds, value in curve:
        if value >= target if maximize else value <= target:
            return seconds
    return None


def best_so_far_figure(runs: Sequence[MethodRun], objective: str, budget: float | None) -> Figure:
    """Best-so-far objective over wall time: one colour per method, one line per seed."""
    budget = budget or max((r.wall_seconds for r in runs), default=1.0)
    figure, axes = subplots(figsize=(8, 4.5))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(dict.fromkeys(r.method for r in runs)):
        for number, run in enumerate(r for r in runs if r.method == method):
            if not run.curve:
                continue
            seconds, values = zip(*run.curve, strict=True)
            axes.step(
                [*seconds, budget],
                [*values, values[-1]],
                where="post",
                color=colours[index % len(colours)],
                alpha=0.8,
                label=method if number == 0 else None,
            )
    axes.set_xlabel("seconds of search")
    axes.set_ylabel(f"best {objective} so far")
    axes.set_xlim(0, budget)
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _log(
    tracker: Tracker,
    run_id: str,
    job: SweepJob,
    runs: Sequence[MethodRun],
    table: pd.DataFrame,
) -> None:
    objective = job.settings.objectives[0]
    per_run = pd.DataFrame([{k: v for k, v in r.__dict__.items() if k != "curve"} for r in runs])
    tracker.log_text(run_id, table.to_csv(index=False), "comparison.csv")
    tracker.log_text(run_id, per_run.to_csv(index=False), "runs.csv")
    tracker.log_yaml(run_id, redact_tree(job.sweep_node), "sweep.yaml")
    figure = best_so_far_figure(runs, objective, compare_settings(job).budget)
    tracker.log_figure(run_id, figure, "best_so_far.png")
    metrics = {
        f"{row.method}.{column}": float(getattr(row, column))
        for row in table.itertuples()
        for column in ("best_val", "its_test", "trials", "wall_seconds", "seconds_to_95pct")
        if pd.notna(getattr(row, column))
    }
    tracker.log_metrics(run_id, metrics, step=0)


def _completed_at(trial: optuna.trial.FrozenTrial) -> datetime:
    """When a finished trial ended (the trials passed here all have ended)."""
    assert trial.datetime_complete is not None
    return trial.datetime_complete
