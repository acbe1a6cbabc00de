"""Optuna studies, samplers and pruners, built from the sweep settings."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
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
from satsweep.sweep.settings import SweepSettings
from satsweep.sweep.space import SearchSpace

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
    "none": NopPruner,
}


def worker_seed(seed: int | None, worker_index: int | None) -> int | None:
    """Each worker samples from its own stream, or parallel workers would repeat each other.

    Worker 0 uses the configured seed, so a one-worker sweep is reproducible; a worker
    started by hand (no index) draws a random one.
    """
    if seed is None or worker_index is None:
        return None
    return seed + worker_index


def build_sampler(
    settings: SweepSettings, space: SearchSpace, worker_index: int | None = 0
) -> BaseSampler:
    sampler = settings.sampler
    seed = worker_seed(sampler.seed, worker_index)
    if sampler.name == "grid":
        return _construct(GridSampler, "sweep.sampler", space.grid(), seed=seed, **sampler.options)
    return _construct(SAMPLERS[sampler.name], "sweep.sampler", seed=seed, **sampler.options)


def build_pruner(settings: SweepSettings) -> BasePruner:
    if settings.pruner.name == "none":  # options of the pruner it replaces do not apply
        return NopPruner()
    return _construct(PRUNERS[settings.pruner.name], "sweep.pruner", **settings.pruner.options)


def _construct(kind: type, key: str, *args: Any, **options: Any) -> Any:
    try:
        return kind(*args, **options)
    except (TypeError, ValueError) as error:
        raise UserError(f"bad {key}.options for {kind.__name__}: {error}") from error


def open_study(
    settings: SweepSettings,
    space: SearchSpace,
    storage: BaseStorage,
    worker_index: int | None = 0,
) -> optuna.Study:
    """Create the study, or load it to resume (same name, same storage)."""
    try:
        return optuna.create_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=build_sampler(settings, space, worker_index),
            pruner=build_pruner(settings),
            directions=settings.directions,
            load_if_exists=True,
        )
    except ValueError as error:  # e.g. directions differ from the stored study's
        raise UserError(
            f"study {settings.study_name!r} exists with other settings ({error}): "
            "choose another sweep.study_name"
        ) from error
