"""A sweep job: the sweep file, the user's overrides and the search space, validated.

Everything that can be wrong with a sweep (an unknown sampler, a misspelled
parameter path, a range that leaves the valid values) is found here, before any
worker starts or any run is logged.

A sweep is composed once: the launcher saves the validated job to a file beside
the study's logs (:func:`save_job`), and its workers, and every worker that
re-executes itself, load that file (:func:`load_job`) instead of composing the
sweep again with Hydra. Only each trial's own config is composed per trial.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from pydantic import ValidationError

from satsweep.config import (
    compose_config,
    describe_validation_error,
    load_run_config,
    to_container,
    validate,
)
from satsweep.errors import UserError
from satsweep.files import atomic_file
from satsweep.metrics import objective_names
from satsweep.redact import redact
from satsweep.schema import RunConfig
from satsweep.search.settings import SweepSettings
from satsweep.search.space import Dimension, SearchSpace, parse_space
from satsweep.search.study import rehearse

LOG = logging.getLogger(__name__)

SWEEP_GROUP = "sweep"
# The job file holds no password: each string that holds one is replaced by a
# placeholder, and the strings travel in this environment variable, readable by
# the user alone (never argv, which any user on the machine can read).
SECRETS_ENV = "SATSWEEP_WORKER_SECRETS"
JOB_ENV = "SATSWEEP_WORKER_JOB"  # the job file's path
_SECRET = "\x00secret:"


@dataclass(frozen=True)
class SweepJob:
    """A sweep, validated: its settings, search space and base experiment.

    Built once per sweep by :func:`prepare_job`; workers get it from the file
    :func:`save_job` writes, so every process runs exactly the same sweep.
    """

    file: str  # e.g. "sweeps/quick.yaml", for messages
    overrides: tuple[str, ...]  # as given, sweep expressions included, for the record
    settings: SweepSettings
    space: SearchSpace
    base_overrides: tuple[str, ...]  # the user's fixed overrides, sweep=NAME included
    base: RunConfig  # the base experiment, before any trial's overrides
    sweep_node: dict[str, Any]  # the resolved ``sweep`` node, for the record
    space_params: dict[str, str]  # the space as written: the file's params and the CLI's

    def on_threads(self, threads: int) -> SweepJob:
        """This job as a process with ``threads`` TensorFlow threads runs it.

        The count changes a run's numbers, so each run's config records it and
        ``satsweep reproduce`` trains on as many. A count the user chose stays.
        """
        if threads <= 0 or self.base.trainer.threads:
            return self
        trainer = self.base.trainer.model_copy(update={"threads": threads})
        return replace(
            self,
            base_overrides=(*self.base_overrides, f"trainer.threads={threads}"),
            base=self.base.model_copy(update={"trainer": trainer}),
        )

    def trial_config(self, trial_overrides: Sequence[str]) -> RunConfig:
        """The config of one trial: the trial's overrides on top of the user's."""
        return load_run_config([*self.base_overrides, *trial_overrides])


def prepare_job(overrides: Sequence[str]) -> SweepJob:
    """Compose ``sweeps/NAME.yaml`` with ``overrides`` and check everything a sweep needs."""
    fixed, swept = _split_sweep_expressions(overrides)
    name = _sweep_choice(fixed)
    file = f"sweeps/{name}.yaml"
    composed = compose_config(fixed)
    container = to_container(composed)
    fixed = [*fixed, *_pinned_volatile_values(composed, container)]
    try:
        settings = SweepSettings.model_validate(container.get("sweep"))
    except ValidationError as error:
        raise UserError(f"{file}: {describe_validation_error(error, SWEEP_GROUP)}") from error
    base = validate(container)
    searched = {**settings.params, **swept}
    params = {key: expression for key, expression in searched.items() if expression is not None}
    space = parse_space(params, settings.conditional, file)
    if settings.backend == "kerastuner":
        _check_kerastuner_space(space, file)
    else:  # a sampler or pruner that cannot be built or run fails here, not in a worker
        rehearse(settings, space)
    _check_objectives(settings, base, file)
    _check_grid_budget(settings, space, file)
    job = SweepJob(
        file, tuple(overrides), settings, space, tuple(fixed), base, container["sweep"], params
    )
    _check_space(job)
    _warn_of_a_final_fit_on_a_share(job)
    return job


def job_path(job: SweepJob) -> Path:
    """The job file of a sweep, beside its worker logs."""
    return Path(job.base.paths.outputs) / "sweeps" / job.settings.study_name / "job.json"


@dataclass(frozen=True)
class JobHandoff:
    """A saved job, and what a worker process needs to load it."""

    path: Path
    secrets: str  # the JSON list of the strings the file holds as placeholders

    def environment(self) -> dict[str, str]:
        """The variables to start a worker with: it then loads this job."""
        return {JOB_ENV: str(self.path), SECRETS_ENV: self.secrets}


def save_job(job: SweepJob, path: Path) -> JobHandoff:
    """Write the validated job where workers load it, its secrets kept out of the file."""
    secrets: list[str] = []
    record = _hide_secrets(_record(job), secrets)
    with atomic_file(path) as stream:  # a worker never reads half a file
        stream.write(json.dumps(record).encode())
    return JobHandoff(path, json.dumps(secrets))


def _record(job: SweepJob) -> dict[str, Any]:
    return {
        "file": job.file,
        "overrides": list(job.overrides),
        "settings": job.settings.model_dump(mode="json"),
        "base_overrides": list(job.base_overrides),
        "base": job.base.model_dump(mode="json"),
        "sweep_node": job.sweep_node,
        "space_params": job.space_params,
    }


def _hide_secrets(tree: Any, secrets: list[str]) -> Any:
    """``tree`` with every string that holds a secret replaced by a numbered placeholder."""
    if isinstance(tree, str) and redact(tree) != tree:
        secrets.append(tree)
        return f"{_SECRET}{len(secrets) - 1}"
    if isinstance(tree, dict):
        return {key: _hide_secrets(value, secrets) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_hide_secrets(value, secrets) for value in tree]
    return tree


def _restore_secrets(tree: Any, secrets: list[str]) -> Any:
    if isinstance(tree, str) and tree.startswith(_SECRET):
        return secrets[int(tree.removeprefix(_SECRET))]
    if isinstance(tree, dict):
        return {key: _restore_secrets(value, secrets) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_restore_secrets(value, secrets) for value in tree]
    return tree


def load_job(path: Path) -> SweepJob:
    """The job :func:`save_job` wrote, its secrets from :data:`SECRETS_ENV`; composed by nobody."""
    try:
        hidden = json.loads(path.read_text())
        record = _restore_secrets(hidden, json.loads(os.environ.get(SECRETS_ENV, "[]")))
    except (OSError, ValueError, IndexError) as error:
        raise UserError(
            f"cannot read the sweep job {path} (with its secrets from ${SECRETS_ENV}): "
            f"{error}; join the sweep with `satsweep worker sweep=NAME ...` instead"
        ) from error
    try:
        settings = SweepSettings.model_validate(record["settings"])
        base = RunConfig.model_validate(record["base"])
    except ValidationError as error:
        raise UserError(
            f"the sweep job {path} was written by another version of satsweep "
            f"({describe_validation_error(error)}): run `satsweep sweep` for it again"
        ) from error
    return SweepJob(
        file=record["file"],
        overrides=tuple(record["overrides"]),
        settings=settings,
        space=parse_space(record["space_params"], settings.conditional, record["file"]),
        base_overrides=tuple(record["base_overrides"]),
        base=base,
        sweep_node=record["sweep_node"],
        space_params=record["space_params"],
    )


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


# Resolvers whose value changes between compositions (Hydra's ${now:...}).
_VOLATILE = re.compile(r"\$\{now:")


def _pinned_volatile_values(composed: DictConfig, resolved: dict[str, Any]) -> list[str]:
    """Overrides that fix each ``${now:...}`` value at the one the job resolved.

    Each trial composes its config again: unpinned, a seed or a run name made from
    the clock would differ between the trials of one sweep.
    """
    raw = OmegaConf.to_container(composed, resolve=False)
    return [
        f"{key}={_quoted(_select(resolved, key))}"
        for key, value in _leaves(raw)
        if isinstance(value, str) and _VOLATILE.search(value)
    ]


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), tree)]


def _select(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _quoted(value: Any) -> str:
    """A Hydra override value that reads back as ``value`` (a string, quoted)."""
    if not isinstance(value, str):
        return json.dumps(value)
    return "'" + value.replace("'", "\\'") + "'"


def _check_grid_budget(settings: SweepSettings, space: SearchSpace, file: str) -> None:
    """A grid has a fixed number of points: a larger budget would run some of them twice."""
    if settings.backend != "optuna" or settings.sampler.name != "grid":
        return
    points = 1
    for values in space.grid().values():
        points *= len(values)
    if settings.n_trials is None or settings.n_trials > points:
        raise UserError(
            f"{file}: sweep.n_trials={settings.n_trials} but the grid has {points} points: "
            f"set sweep.n_trials={points} (each point once) or widen the grid"
        )


def _check_objectives(settings: SweepSettings, base: RunConfig, file: str) -> None:
    binary = base.data.is_binary or base.data.format == "shipsnet_json"
    known = objective_names(binary, base.tracking.error_analysis)
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


def _warn_of_a_final_fit_on_a_share(job: SweepJob) -> None:
    """A final fit inherits its trial's ``data.train_share``: say so when that is below 1.

    Trials on a share are a cheap fidelity; an answer trained on it is seldom meant.
    """
    shared = job.base.data.train_share < 1 or "data.train_share" in job.space_params
    set_for_it = any(
        o.lstrip("+~").startswith("data.train_share=") for o in job.settings.final_fit.overrides
    )
    if job.settings.final_fit.enabled and shared and not set_for_it:
        LOG.warning(
            "the trials train on a share of the training images (data.train_share) and so "
            "will the final fit: add data.train_share=1.0 to sweep.final_fit.overrides to "
            "answer with all of them"
        )


def _check_space(job: SweepJob) -> None:
    """Compose the config at the space's edges: bad paths and ranges fail before any trial.

    The dimensions that share a condition (the unconditional ones together) are
    set to their k-th edge values at once, so a whole space costs a few
    compositions, not two per dimension. Only when one fails is each dimension
    composed alone, to name the culprit.
    """
    by_condition: dict[tuple[str, str] | None, list[Dimension]] = {}
    for dimension in job.space.dimensions:
        by_condition.setdefault(dimension.condition, []).append(dimension)
    for condition, dimensions in by_condition.items():
        chosen = [f"{condition[0]}={condition[1]}"] if condition else []
        edges = [dimension.extremes() for dimension in dimensions]
        for index in range(max(len(values) for values in edges)):
            overrides = [
                dimension.override(values[min(index, len(values) - 1)])
                for dimension, values in zip(dimensions, edges, strict=True)
            ]
            try:
                job.trial_config([*chosen, *overrides])
            except UserError as error:
                for dimension in dimensions:
                    _check_dimension(job, dimension)
                together = " ".join([*chosen, *overrides])
                raise UserError(
                    f"{job.file}: these swept values fail together ({together}): {error}; "
                    "sweep the key under a condition (sweep.conditional) or narrow its range"
                ) from error


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
