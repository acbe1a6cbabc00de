"""A sweep job: the sweep file, the user's overrides and the search space, validated.

Everything that can be wrong with a sweep (an unknown sampler, a misspelled
parameter path, a range that leaves the valid values) is found here, before any
worker starts or any run is logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from pydantic import ValidationError

from satsweep.config import compose_config, load_run_config, to_container, validate
from satsweep.errors import UserError
from satsweep.schema import RunConfig
from satsweep.search.settings import SweepSettings, known_objectives
from satsweep.search.space import Dimension, SearchSpace, parse_space
from satsweep.search.study import build_pruner, build_sampler

SWEEP_GROUP = "sweep"
# How a launcher hands its overrides to workers: the environment, never argv,
# because they may hold passwords and every user on a machine can read argv.
OVERRIDES_ENV = "SATSWEEP_WORKER_OVERRIDES"


def inherited_overrides() -> list[str]:
    """The overrides a launcher passed to this worker (none for a worker started by hand)."""
    return [str(text) for text in json.loads(os.environ.get(OVERRIDES_ENV, "[]"))]


@dataclass(frozen=True)
class SweepJob:
    file: str  # e.g. "sweeps/quick.yaml", for messages
    overrides: tuple[str, ...]  # as given, sweep expressions included: what workers get
    settings: SweepSettings
    space: SearchSpace
    base_overrides: tuple[str, ...]  # the user's fixed overrides, sweep=NAME included
    base: RunConfig  # the base experiment, before any trial's overrides
    sweep_node: dict[str, Any]  # the resolved ``sweep`` node, for the record

    def trial_config(self, trial_overrides: Sequence[str]) -> RunConfig:
        """The config of one trial: the trial's overrides on top of the user's."""
        return load_run_config([*self.base_overrides, *trial_overrides])


def prepare_job(overrides: Sequence[str]) -> SweepJob:
    fixed, swept = _split_sweep_expressions(overrides)
    name = _sweep_choice(fixed)
    file = f"sweeps/{name}.yaml"
    container = to_container(compose_config(fixed))
    try:
        settings = SweepSettings.model_validate(container.get("sweep"))
    except ValidationError as error:
        raise UserError(f"{file}: {_describe(error)}") from error
    base = validate(container)
    params = {**settings.params, **swept}
    space = parse_space(params, settings.conditional, file)
    if settings.backend == "kerastuner":
        _check_kerastuner_space(space, file)
    else:  # a sampler or pruner that cannot be built fails here, not in a worker
        build_sampler(settings, space)
        build_pruner(settings)
    _check_objectives(settings, base, file)
    job = SweepJob(file, tuple(overrides), settings, space, tuple(fixed), base, container["sweep"])
    for dimension in space.dimensions:
        _check_dimension(job, dimension)
    return job


def _split_sweep_expressions(overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Command-line overrides such as ``model.blocks=choice(2,3)`` join the search space."""
    parser = OverridesParser.create()
    fixed, swept = [], {}
    for text in overrides:
        try:
            parsed = parser.parse_override(text)
        except HydraException as error:
            raise UserError(f"bad override {text!r}: {' '.join(str(error).split())}") from error
        if parsed.is_sweep_override() and parsed.get_key_element().lstrip("+~") == SWEEP_GROUP:
            raise UserError(
                f"{text} names several sweep files: run one sweep at a time "
                "(sweep=NAME, with NAME a file in sweeps/)"
            )
        if parsed.is_sweep_override():
            swept[parsed.get_key_element()] = text.split("=", 1)[1]
        else:
            fixed.append(text)
    return fixed, swept


def _sweep_choice(overrides: Sequence[str]) -> str:
    for text in overrides:
        key, _, value = text.partition("=")
        if key.lstrip("+~") == SWEEP_GROUP and value:
            return value
    raise UserError("no sweep chosen: pass sweep=NAME, with NAME a file in sweeps/ (e.g. quick)")


def _check_objectives(settings: SweepSettings, base: RunConfig, file: str) -> None:
    binary = base.data.is_binary or base.data.format == "shipsnet_json"
    known = known_objectives(binary)
    for objective in settings.objectives:
        if objective not in known:
            raise UserError(
                f"{file}: no run produces the objective {objective!r}: "
                f"choose from {', '.join(known)}"
            )


def _check_kerastuner_space(space: SearchSpace, file: str) -> None:
    """KerasTuner's ``Choice`` holds values of one type: int, float, str or bool."""
    for dimension in space.dimensions:
        choices = getattr(dimension.distribution, "choices", None)
        kinds = {type(choice) for choice in choices or ()}
        if len(kinds) > 1 or not kinds <= {int, float, str, bool}:
            raise UserError(
                f"{file}: parameter {dimension.key}: KerasTuner needs choices of one type "
                f"(int, float, str or bool), not {list(choices or ())}: make them alike or "
                "use sweep.backend=optuna"
            )


def _check_dimension(job: SweepJob, dimension: Dimension) -> None:
    """Compose the config at both edges of the dimension: bad paths and ranges fail now."""
    condition = (
        [f"{dimension.condition[0]}={dimension.condition[1]}"] if dimension.condition else []
    )
    for value in dimension.extremes():
        try:
            job.trial_config([*condition, dimension.override(value)])
        except UserError as error:
            raise UserError(f"{job.file}: parameter {dimension.key}: {error}") from error


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(["sweep", *(str(p) for p in first["loc"])])
    if first["type"] == "extra_forbidden":
        return f"unknown key {key}: check its spelling"
    if first["type"] == "missing":
        return f"missing key {key}"
    if first["type"] == "value_error":
        return first["msg"].removeprefix("Value error, ")
    return f"invalid value {key}={first.get('input')!r}: {first['msg']}"
