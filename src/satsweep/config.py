"""Compose configs with Hydra and validate them once, at the edge.

Hydra's compose API (rather than ``@hydra.main``) lets one process compose many
configs: the CLI composes one, a sweep composes one per trial, and ``reproduce``
composes on top of a logged config. Every composition error and validation error
becomes a one-line :class:`~satsweep.errors.UserError`.

``conf/`` holds the building blocks (data, model, optimizer, ...). Named
experiments and sweep files live at the project's top level, in ``experiments/``
and ``sweeps/``, and join Hydra's ``experiment`` and ``sweep`` groups through its
ConfigStore, the registry Hydra provides for configs that are not in a config
folder.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import ValidationError

from satsweep.errors import UserError
from satsweep.schema import Environment, RunConfig
from satsweep.yamlfiles import load_yaml

PRIMARY_CONFIG = "config"
_TAGGED_UNIONS = ("model", "optimizer")
# Config groups whose options are the YAML files of a top-level project folder.
TOP_LEVEL_GROUPS = {"experiment": "experiments", "sweep": "sweeps"}
_PACKAGE_HEADER = re.compile(r"\A(?:#.*\n)*?# @package (\S+)")


def project_root() -> Path:
    """The folder holding ``conf/``: ``$SATSWEEP_HOME``, else the nearest one above the cwd.

    Falls back to the source checkout this package was installed from (editable install).
    """
    if home := os.environ.get("SATSWEEP_HOME"):
        return Path(home).resolve()
    for folder in (Path.cwd(), *Path.cwd().parents):
        if _is_satsweep_project(folder):
            return folder
    return Path(__file__).resolve().parents[2]


# The config groups a satsweep project's conf/ holds: another Hydra project's conf/
# (a working folder inside it) is passed over rather than composed.
PROJECT_GROUPS = ("data", "model", "optimizer", "trainer", "tracking", "storage")


def _is_satsweep_project(folder: Path) -> bool:
    conf = folder / "conf"
    return (conf / f"{PRIMARY_CONFIG}.yaml").is_file() and all(
        (conf / group).is_dir() for group in PROJECT_GROUPS
    )


def config_dir() -> Path:
    """The ``conf/`` folder Hydra composes from; a missing one is a user error."""
    folder = project_root() / "conf"
    if not (folder / f"{PRIMARY_CONFIG}.yaml").is_file():
        raise UserError(
            f"no satsweep config found at {folder}: run satsweep from the project folder "
            "or set SATSWEEP_HOME to it"
        )
    return folder


def group_options(group: str) -> list[Path]:
    """The files of a top-level group (``sweep``: ``sweeps/*.yaml``), bases included."""
    return sorted((project_root() / TOP_LEVEL_GROUPS[group]).glob("*.yaml"))


def _register_top_level_groups(overrides: Sequence[str]) -> None:
    """Store ``experiments/`` and ``sweeps/`` in Hydra's ConfigStore, as they are on disk now.

    A file that is not a valid config fails only the command that chooses it; the
    others pass it over.
    """
    store = ConfigStore.instance()
    for group in TOP_LEVEL_GROUPS:
        chosen = {
            value
            for key, _, value in (o.partition("=") for o in overrides)
            if key.lstrip("+~") == group
        }
        for path in group_options(group):
            try:
                node, package = _group_file(path, group)
            except UserError:
                if path.stem in chosen or (path.stem.startswith("_") and chosen):
                    raise
                continue
            store.store(
                name=path.stem, node=node, group=group, package=package, provider="satsweep"
            )


_KINDS = {list: "list", int: "number", float: "number", str: "string", bool: "boolean"}


def _group_file(path: Path, group: str) -> tuple[dict[str, Any], str]:
    """A sweep or experiment file: a mapping under ``# @package _global_``.

    The mapping stays plain data: the ConfigStore builds the one config node it keeps.
    """
    origin = f"{TOP_LEVEL_GROUPS[group]}/{path.name}"
    raw = path.read_bytes()
    content = load_yaml(raw, origin)
    if content is None:
        raise UserError(f"{origin} is empty: a {group} file sets keys, see sweeps/quick.yaml")
    if not isinstance(content, dict):
        raise UserError(
            f"{origin} holds a {_KINDS.get(type(content), 'value')}, not a mapping of config "
            "keys: see sweeps/quick.yaml for the layout"
        )
    header = _PACKAGE_HEADER.match(raw.decode("utf-8"))
    if not header:
        raise UserError(
            f"{origin} lacks its first line `# @package _global_` (its keys are top-level "
            "config keys): add it"
        )
    return content, header[1]


# The environment variables the configs read with ${oc.env:...}.
CONFIG_ENVIRONMENT = (
    "SATSWEEP_OUTPUTS",
    "SATSWEEP_DATA_DIR",
    "MLFLOW_TRACKING_URI",
    "SATSWEEP_OPTUNA_STORAGE",
)


def _check_environment() -> None:
    """A variable set to nothing would put the outputs in the current folder: say so instead."""
    for name in CONFIG_ENVIRONMENT:
        if name in os.environ and not os.environ[name].strip():
            raise UserError(
                f"the environment variable {name} is set but empty: unset it "
                f"(unset {name}) for the default, or give it a value"
            )


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra command-line overrides."""
    _check_environment()
    try:
        _register_top_level_groups(overrides)
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=PRIMARY_CONFIG, overrides=list(overrides))
    except yaml.YAMLError as error:  # a config or sweep file that is not valid YAML
        where = getattr(error, "problem_mark", None)
        place = f" ({where.name}, line {where.line + 1})" if where else ""
        raise UserError(f"a config file is not valid YAML{place}: {_one_line(error)}") from error
    except (HydraException, OmegaConfBaseException) as error:
        unknown = _UNKNOWN_KEY.search(str(error))
        if unknown and not any(o.startswith("+") for o in overrides if unknown[1] in o):
            raise UserError(_unknown_key(unknown[1], overrides)) from error
        raise UserError(f"bad override: {_one_line(error)}") from error
    _absolutise_paths(cfg)
    return cfg


# Hydra's error for `key=value` where the key does not exist (it suggests `+key`).
_UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'")


def _unknown_key(key: str, overrides: Sequence[str]) -> str:
    """Name the closest existing key: a typo is likelier than a wish for a new key."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
        try:
            known = _keys(OmegaConf.to_container(compose(PRIMARY_CONFIG, groups), resolve=False))
        except (HydraException, OmegaConfBaseException):
            known = []
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "see --cfg job for the valid keys"
    return f"unknown config key {key}: {hint}"


def _keys(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    return [k for name, value in tree.items() for k in _keys(value, f"{prefix}{name}.")]


def _absolutise_paths(cfg: DictConfig) -> None:
    """Anchor relative output and data paths at the cwd, so logged configs are unambiguous."""
    for key in ("outputs", "data_dir"):
        value = cfg.paths.get(key)
        if isinstance(value, str) and "${" not in value:
            cfg.paths[key] = str(Path(value).expanduser().resolve())


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolve interpolations; a missing mandatory value or a bad reference is a user error."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = error.full_key
        raise UserError(f"config key {key} is required: set it with {key}=VALUE") from error
    except OmegaConfBaseException as error:
        raise UserError(f"cannot resolve the config: {_one_line(error)}") from error
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def validate(container: dict[str, Any]) -> RunConfig:
    """Check types, ranges and names of a resolved config, giving a typed :class:`RunConfig`."""
    body = {k: v for k, v in container.items() if k != "sweep"}
    try:
        return RunConfig.model_validate(body)
    except ValidationError as error:
        raise UserError(describe_validation_error(error)) from error


def load_run_config(overrides: Sequence[str]) -> RunConfig:
    """Compose, resolve and validate: the one way a training config is made."""
    return validate(to_container(compose_config(overrides)))


def load_environment(overrides: Sequence[str]) -> Environment:
    """The paths, tracking and storage settings alone, for commands that train nothing."""
    container = to_container(compose_config(overrides))
    try:
        return Environment.model_validate({key: container.get(key) for key in _ENVIRONMENT})
    except ValidationError as error:
        raise UserError(describe_validation_error(error)) from error


_ENVIRONMENT = tuple(Environment.model_fields)


def describe_validation_error(error: ValidationError, root: str = "") -> str:
    """The first error of a config's validation, in one line that says how to fix it.

    ``root`` is where the validated node sits in the config (``sweep`` for a sweep's
    settings), so the message names the key the user would write.
    """
    first = error.errors()[0]
    loc = [*([root] if root else []), *(str(part) for part in first["loc"])]
    if len(loc) > 2 and loc[0] in _TAGGED_UNIONS:
        del loc[1]  # pydantic puts the union's tag (e.g. 'sgd') into the path
    key = ".".join(loc) or "config"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"unknown config key {key}: check the spelling, or see --cfg job for valid keys"
    if first["type"] == "missing":
        return f"config key {key} is missing: add it to the YAML or pass +{key}=VALUE"
    if first["type"] == "union_tag_invalid":
        context = first.get("ctx", {})
        return (
            f"unknown {key} name {context.get('tag')!r}: "
            f"choose one of {context.get('expected_tags')}"
        )
    if first["type"] == "value_error":
        return f"invalid {key or 'config'}: {message.removeprefix('Value error, ')}"
    value = first.get("input")
    return f"invalid value {key}={value!r}: {message}; fix it with {key}=VALUE"


# Hydra's hint for `a=1,2`; satsweep sweeps with `satsweep sweep`, not --multirun.
_MULTIRUN_HINT = re.compile(r"\s*3\. To sweep over it, add --multirun to your command line")


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines).split(" Config search path:")[0]
    text = _MULTIRUN_HINT.sub(
        " 3. To sweep over it, use satsweep sweep with key=choice(value1,value2)", text
    )
    return text.replace("Available options in", "available options in")


def spell(value: Any) -> str:
    """``value`` in Hydra's override grammar: ``null``, ``true``, ``0.001``, ``'a'``, ``[x,y]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(spell(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{spell(v)}" for k, v in value.items()) + "}"
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
