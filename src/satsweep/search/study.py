"""Optuna studies, samplers and pruners, built from the sweep settings."""

from __future__ import annotations

import re
import warnings
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    ThresholdPruner,
)
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GridSampler,
    NSGAIISampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.storages import BaseStorage

from satsweep.errors import UserError
from satsweep.search.settings import SweepSettings
from satsweep.search.space import SearchSpace

SAMPLERS: dict[str, type[BaseSampler]] = {
    "tpe": TPESampler,
    "random": RandomSampler,
    "cmaes": CmaEsSampler,
    "qmc": QMCSampler,
    "nsga2": NSGAIISampler,
}
PRUNERS: dict[str, type[BasePruner]] = {
    "median": MedianPruner,
    "percentile": PercentilePruner,
    "successive_halving": SuccessiveHalvingPruner,
    "hyperband": HyperbandPruner,
    "threshold": ThresholdPruner,
    "none": NopPruner,
}


HISTORY_STRIDE = 7919  # a prime: seeds of resumed workers stay apart from worker indices


def worker_seed(seed: int | None, worker_index: int | None, history: int = 0) -> int | None:
    """Each worker samples from its own stream, or parallel workers would repeat each other.

    Worker 0 of a new study uses the configured seed, so a one-worker sweep is
    reproducible; a worker that joins a study with ``history`` trials (a resume, a
    re-executed worker) shifts its seed by it, or it would replay the proposals it
    made the first time. A worker started by hand (no index) draws a random seed.
    """
    if seed is None or worker_index is None:
        return None
    return (seed + worker_index + HISTORY_STRIDE * history) % 2**32  # samplers take < 2**32


def build_sampler(
    settings: SweepSettings, space: SearchSpace, worker_index: int | None = 0, history: int = 0
) -> BaseSampler:
    """The sweep's Optuna sampler, seeded per worker so that workers never repeat each other."""
    sampler = settings.sampler
    if "seed" in sampler.options:  # one place for it: workers offset it (see worker_seed)
        raise UserError(
            "the sampler's seed is sweep.sampler.seed, not sweep.sampler.options.seed: "
            "remove it with ~sweep.sampler.options.seed and set sweep.sampler.seed"
        )
    seed = worker_seed(sampler.seed, worker_index, history)
    if sampler.name == "grid":
        return _construct(GridSampler, "sweep.sampler", space.grid(), seed=seed, **sampler.options)
    return _construct(SAMPLERS[sampler.name], "sweep.sampler", seed=seed, **sampler.options)


def build_pruner(settings: SweepSettings) -> BasePruner:
    """The sweep's Optuna pruner (a NopPruner for ``none``)."""
    if settings.pruner.name == "none":  # options of the pruner it replaces do not apply
        return NopPruner()
    return _construct(PRUNERS[settings.pruner.name], "sweep.pruner", **settings.pruner.options)


def rehearse(settings: SweepSettings, space: SearchSpace) -> None:
    """Two trials of an in-memory study with the sweep's sampler and pruner, before any real one.

    Optuna checks few option types when it builds a sampler: ``n_startup_trials:
    abc`` would fail every trial of the sweep instead of the command.
    """
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(
                sampler=build_sampler(settings, space),
                pruner=build_pruner(settings),
                directions=settings.directions,
            )
            for step in range(2):
                _rehearse_trial(study, space, settings, step)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _rehearse_trial(
    study: optuna.Study, space: SearchSpace, settings: SweepSettings, step: int
) -> None:
    try:
        trial = study.ask()
        space.suggest(trial)
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(_bad_options("sweep.sampler", settings.sampler.name, error)) from error
    if len(settings.directions) == 1:  # Optuna prunes single-objective studies only
        try:
            trial.report(0.5, step)
            trial.should_prune()
        except (TypeError, ValueError, KeyError) as error:
            raise UserError(_bad_options("sweep.pruner", settings.pruner.name, error)) from error
    study.tell(trial, [0.5] * len(settings.directions))


def _bad_options(key: str, name: str, error: Exception) -> str:
    return f"bad {key}.options for {name}: {error}; fix the option's value or type in {key}.options"


def _construct(kind: type, key: str, *args: Any, **options: Any) -> Any:
    try:
        with warnings.catch_warnings():  # options a sweep file chose (TPE's group, ...)
            warnings.simplefilter("ignore", ExperimentalWarning)
            return kind(*args, **options)
    except (TypeError, ValueError) as error:
        # an option of the sampler or pruner a sweep file chose, left over after a switch
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        hint = f"; remove it with ~{key}.options.{unknown[1]}" if unknown else ""
        raise UserError(f"bad {key}.options for {kind.__name__}: {error}{hint}") from error


def open_study(
    settings: SweepSettings,
    space: SearchSpace,
    storage: BaseStorage,
    worker_index: int | None = 0,
) -> optuna.Study:
    """Load the study to resume or join it, else create it (same name, same storage).

    Loading first keeps Optuna's "Using an existing study" note out of the logs of
    workers joining a study their launcher has just created.
    """
    sampler = build_sampler(settings, space, worker_index)
    try:
        study = optuna.load_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler,
            pruner=build_pruner(settings),
        )
    except KeyError:  # a new study; another process may create it at the same moment
        study = optuna.create_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler,
            pruner=build_pruner(settings),
            directions=settings.directions,
            load_if_exists=True,
        )
    stored = [direction.name.lower() for direction in study.directions]
    if stored != list(settings.directions):
        raise UserError(
            f"study {settings.study_name!r} exists with directions {stored}, not "
            f"{list(settings.directions)}: choose another sweep.study_name"
        )
    history = len(study.get_trials(deepcopy=False))
    if history:
        study.sampler = build_sampler(settings, space, worker_index, history)
    return study
