"""Reproduce a logged run, or start a new one from it with a few changes.

The config comes from the run's ``config.yaml`` artifact, not from today's YAML
files, which may have changed since. Only where to log (``paths``, ``tracking``,
``storage``) is taken from the current invocation, so a run's record can never
make satsweep write outside the current outputs folder.
"""

from __future__ import annotations

import html
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from satsweep.config import config_dir, load_run_config, spell, validate
from satsweep.data import load_data
from satsweep.errors import UserError
from satsweep.metrics import RESULT_PREFIXES
from satsweep.provenance import git_state, package_versions
from satsweep.redact import redact
from satsweep.runtime import accelerator
from satsweep.schema import RunConfig, as_plain, experiment_keys
from satsweep.tracking import TAG_PREFIX, Tracker, flatten
from satsweep.training import TrainResult, train
from satsweep.yamlfiles import load_yaml

REPRODUCES_TAG = f"{TAG_PREFIX}reproduces"
DERIVED_TAG = f"{TAG_PREFIX}derived_from"
VERDICT_TAG = f"{TAG_PREFIX}reproduce_verdict"
GROUPS = ("data", "model", "optimizer")
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoggedRun:
    """A logged run as reproduce reads it: its config, metrics, tags and confusion matrix."""

    run_id: str
    experiment_id: str
    name: str
    config: dict[str, Any]
    tags: dict[str, str]
    metrics: dict[str, float]


def fetch_run(tracker: Tracker, run_id: str) -> LoggedRun:
    """A satsweep run from the store, with its logged config."""
    tracker.check_reachable()
    try:
        run = tracker.client.get_run(run_id)
    except MlflowException as error:
        raise UserError(
            f"no MLflow run {run_id!r} in {redact(tracker.cfg.uri)}: copy a run id from the UI "
            "or from the output of satsweep train"
        ) from error
    tags = dict(run.data.tags)
    if tags.get(f"{TAG_PREFIX}role") == "sweep":
        study = tags.get(f"{TAG_PREFIX}sweep", "NAME")
        raise UserError(
            f"run {run_id} is the parent run of sweep {study!r}, which trains nothing itself: "
            f"reproduce its answer with satsweep reproduce --study {study} --final "
            "(or --best, or --trial N)"
        )
    if run.info.lifecycle_stage == "deleted":
        LOG.warning("run %s is deleted (in the MLflow trash): reproducing it anyway", run_id)
    if f"{TAG_PREFIX}data_digest" not in tags:
        raise UserError(
            f"run {run_id} was not made by satsweep (it has no {TAG_PREFIX}data_digest tag): "
            "only satsweep runs can be reproduced"
        )
    try:
        text = tracker.download_bytes(run_id, "config.yaml")
    except (MlflowException, OSError) as error:
        raise UserError(f"run {run_id} has no config.yaml artifact to reproduce from") from error
    config = load_yaml(text, f"run {run_id}'s config.yaml")  # anyone may have edited it
    if not isinstance(config, dict) or not all(key in config for key in experiment_keys()):
        raise UserError(
            f"run {run_id}'s config.yaml is not a satsweep config (a mapping with "
            f"{', '.join(experiment_keys())}): it was changed after the run; reproduce another run"
        )
    return LoggedRun(
        run_id,
        run.info.experiment_id,
        (run.info.run_name or run_id).split(" ", 1)[0],  # without the score in the name
        config,
        tags,
        dict(run.data.metrics),
    )


def _given_keys(overrides: Sequence[str]) -> set[str]:
    return {text.split("=", 1)[0].lstrip("+~") for text in overrides if "=" in text}


# data.* keys that consent to what a logged run asks, rather than change what it trains.
CONSENT_KEYS = ("data.path", "data.download.enabled")


def refuse_experiment_overrides(run_id: str, overrides: Sequence[str]) -> None:
    """``reproduce`` re-runs what was logged: an override that would change it is refused.

    Dropping it without a word would let a user believe the change was tried.
    """
    for key in sorted(_given_keys(overrides)):
        head = key.split(".", 1)[0].split("/", 1)[0]
        if head in experiment_keys() and key not in CONSENT_KEYS:
            raise UserError(
                f"reproduce re-runs run {run_id} as logged, so {key} cannot change; to train "
                f"from its config with changes run satsweep train --from-run {run_id} {key}=..."
            )


def refuse_logged_writes(
    logged: LoggedRun, environment: RunConfig, overrides: Sequence[str]
) -> None:
    """A run's record may not decide where satsweep writes or what it downloads.

    Anyone who can edit a run's ``config.yaml`` in a shared store could otherwise
    make a colleague's ``reproduce`` download into, or unpack over, any folder.
    Such a config needs the user's own say-so on the command line.
    """
    given = _given_keys(overrides)
    data = logged.config.get("data") or {}
    download = data.get("download") or {}
    if download.get("enabled") and "data.download.enabled" not in given:
        raise UserError(
            f"run {logged.run_id}'s logged config downloads {redact(str(download.get('url')))} "
            f"into {data.get('path')}: a logged run cannot start a download; "
            "pass data.download.enabled=true to allow it"
        )
    path = Path(str(data.get("path", ""))).resolve()
    data_dir = Path(environment.paths.data_dir).resolve()
    if not path.is_relative_to(data_dir) and "data.path" not in given:
        raise UserError(
            f"run {logged.run_id}'s logged data.path {path} is outside the data folder "
            f"{data_dir}: pass data.path={path} to use it, or set SATSWEEP_DATA_DIR"
        )


def restored_config(logged: LoggedRun, environment: RunConfig) -> RunConfig:
    """The logged experiment, logged where ``environment`` logs.

    Keys added to satsweep since the run was logged take today's values (``new_keys``
    names them), so that an upgrade does not make older runs unreproducible.
    """
    here = as_plain(environment)
    body = {
        key: _with_new_keys(logged.config[key], here[key])
        for key in experiment_keys()
        if key in logged.config
    }
    return validate(
        {**body, "paths": here["paths"], "tracking": here["tracking"], "storage": here["storage"]}
    )


def _with_new_keys(logged: Any, today: Any) -> Any:
    """The logged node, plus today's keys it lacks; an option of another kind is left alone."""
    if not _same_kind(logged, today):
        return logged
    added = {key: value for key, value in today.items() if key not in logged}
    kept = {key: _with_new_keys(value, today.get(key)) for key, value in logged.items()}
    return {**added, **kept}


def _same_kind(logged: Any, today: Any) -> bool:
    """Both mappings, of the same option of a group where it has a ``name`` (model, schedule)."""
    if not (isinstance(logged, dict) and isinstance(today, dict)):
        return False
    return logged.get("name") == today.get("name")


def new_keys(logged: LoggedRun, environment: RunConfig) -> list[str]:
    """The dotted keys the logged config lacks, which :func:`restored_config` fills."""
    here = as_plain(environment)
    return [
        path
        for key in experiment_keys()
        if key in logged.config
        for path in _missing(logged.config[key], here[key], key)
    ]


def _missing(logged: Any, today: Any, prefix: str) -> list[str]:
    if not _same_kind(logged, today):
        return []
    found = []
    for key, value in today.items():
        path = f"{prefix}.{key}"
        found += _missing(logged[key], value, path) if key in logged else [path]
    return found


def derived_config(logged: LoggedRun, overrides: Sequence[str]) -> RunConfig:
    """The logged config with the user's Hydra overrides on top (``train --from-run``).

    The logged values become overrides of today's config tree, so group changes
    (``optimizer=sgd``) work as usual: the logged values of a re-chosen group are dropped.
    """
    rechosen = {o.split("=", 1)[0] for o in overrides if "=" in o and "." not in o.split("=")[0]}
    available = {group: {p.stem for p in (config_dir() / group).glob("*.yaml")} for group in GROUPS}
    logged_overrides = []
    for group in GROUPS:
        name = logged.config[group]["name"]
        if group not in rechosen:
            option = name if name in available[group] else "folder"
            logged_overrides.append(f"{group}={option}")
    tree = {key: logged.config[key] for key in experiment_keys()}
    for key, value in flatten(tree).items():
        if key.split(".", 1)[0] not in rechosen:
            logged_overrides.append(f"{key}={spell(value)}")
    return load_run_config([*logged_overrides, *overrides])


def changed_keys(before: dict[str, Any], after: RunConfig) -> dict[str, dict[str, Any]]:
    """The config keys that differ between two runs, for the derived run's record."""
    old = flatten({k: before[k] for k in experiment_keys() if k in before})
    new = flatten({k: v for k, v in as_plain(after).items() if k in experiment_keys()})
    return {
        key: {"from": old.get(key), "to": new.get(key)}
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def train_from_run(run_id: str, overrides: Sequence[str]) -> TrainResult:
    """``train --from-run``: train from a logged run's config, overrides on top, linked to it."""
    environment = load_run_config(overrides)
    tracker = Tracker(environment.tracking)
    logged = fetch_run(tracker, run_id)
    if "data" not in _given_keys(overrides):  # a data group chosen afresh drops the logged one
        refuse_logged_writes(logged, environment, overrides)
    cfg = derived_config(logged, overrides)
    changes = changed_keys(logged.config, cfg)
    result = train(
        cfg,
        experiment_id=logged.experiment_id,
        run_name=f"{logged.name}-derived",
        tags={
            DERIVED_TAG: run_id,
            f"{TAG_PREFIX}changed_keys": ", ".join(changes)[:5000] or "(none)",
        },
    )
    tracker.log_yaml(result.run_id, changes, "changes.yaml")
    return result


@dataclass(frozen=True)
class Verdict:
    """Whether a re-run matched its logged run, metric by metric, and why it may not."""

    table: pd.DataFrame  # metric, logged, reproduced, difference, match
    confusion_equal: bool
    tolerance: float
    run_id: str = ""  # the new run
    link: str = ""  # its page in the MLflow UI
    drift: tuple[str, ...] = ()  # reasons the numbers may differ (code, cores, GPU)
    versions: tuple[tuple[str, str, str], ...] = ()  # package, logged, now

    @property
    def matches(self) -> bool:
        """Whether every metric and the confusion matrix match within the tolerance."""
        return self.confusion_equal and bool(self.table["match"].all())

    @property
    def max_difference(self) -> float:
        """The largest absolute difference over the compared metrics."""
        finite = self.table["difference"].abs().dropna()
        return float(finite.max()) if len(finite) else 0.0

    def _repr_html_(self) -> str:
        word = "reproduced" if self.matches else "NOT reproduced"
        link = f' <a href="{self.link}">{self.run_id}</a>' if self.link else f" {self.run_id}"
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.drift)
        return (
            f"<p><b>{word}</b>: max |difference| {self.max_difference:.3g} "
            f"(tolerance {self.tolerance:g}); confusion matrix "
            f"{'identical' if self.confusion_equal else 'differs'}; new run{link}</p>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + self.table.to_html(index=False)
        )


def compare_metrics(
    logged: dict[str, float], reproduced: dict[str, float], tolerance: float, confusion_equal: bool
) -> Verdict:
    """Each final metric of the logged run against the rerun's."""
    rows = []
    for name in sorted(k for k in logged if k.startswith(RESULT_PREFIXES) or k == "epochs_run"):
        before, after = logged[name], reproduced.get(name, math.nan)
        both_nan = math.isnan(before) and math.isnan(after)
        difference = math.nan if both_nan else after - before
        rows.append(
            {
                "metric": name,
                "logged": before,
                "reproduced": after,
                "difference": difference,
                "match": both_nan or abs(difference) <= tolerance,
            }
        )
    return Verdict(pd.DataFrame(rows), confusion_equal, tolerance)


def drift_warnings(logged: LoggedRun) -> list[str]:
    """Why the numbers might differ: code, packages, hardware, determinism."""
    notes = []
    commit, dirty = git_state(Path.cwd())
    was = logged.tags.get(f"{TAG_PREFIX}git_commit", "")
    if commit != was or dirty:
        notes.append(
            f"code differs: run at commit {was or '?'}, now {commit or '?'}"
            + (" with uncommitted changes" if dirty else "")
        )
    if logged.tags.get(f"{TAG_PREFIX}deterministic") != "true":
        notes.append(
            "the run was not deterministic (trainer.deterministic=false): "
            "results cannot be bit-identical"
        )
    if logged.tags.get(f"{TAG_PREFIX}device", "cpu") != "cpu" or accelerator() != "cpu":
        notes.append("a GPU was involved: GPU kernels can differ in the last digits")
    threads = logged.config.get("trainer", {}).get("threads", 0)
    if threads == 0 and logged.tags.get(f"{TAG_PREFIX}cpu_count") != str(os.cpu_count()):
        notes.append(
            f"the run used all of {logged.tags.get(f'{TAG_PREFIX}cpu_count', '?')} "
            f"cores, this machine has {os.cpu_count()}: results may differ slightly"
        )
    return notes


def version_differences(logged: LoggedRun) -> list[tuple[str, str, str]]:
    """Package versions that differ from the logged run's, which can change results."""
    now = package_versions()
    return [
        (package, logged.tags.get(f"{TAG_PREFIX}version.{package}", "?"), version)
        for package, version in now.items()
        if logged.tags.get(f"{TAG_PREFIX}version.{package}", version) != version
    ]


def _logged_confusion(tracker: Tracker, run_id: str) -> np.ndarray | None:
    try:
        text = tracker.download_text(run_id, "confusion_matrix.csv")
    except (MlflowException, OSError):
        return None
    return pd.read_csv(io.StringIO(text), index_col=0).to_numpy()


def reproduce(
    run_id: str,
    overrides: Sequence[str] = (),
    allow_data_change: bool = False,
    tolerance: float = 0.0,
) -> Verdict:
    """Re-run ``run_id`` from its logged config and compare every final metric and the
    confusion matrix; the new run is tagged with the verdict."""
    refuse_experiment_overrides(run_id, overrides)
    # data.* overrides only consent to what the logged data asks (see refuse_logged_writes)
    environment = load_run_config([o for o in overrides if not o.lstrip("+~").startswith("data")])
    tracker = Tracker(environment.tracking)
    logged = fetch_run(tracker, run_id)
    refuse_logged_writes(logged, environment, overrides)
    cfg = restored_config(logged, environment)
    dataset = load_data(cfg)
    logged_digest = logged.tags[f"{TAG_PREFIX}data_digest"]
    if dataset.digest != logged_digest and not allow_data_change:
        raise UserError(
            f"data digest differs: run {run_id} used {logged_digest[:12]}, {cfg.data.path} now "
            f"gives {dataset.digest[:12]} (files were added, removed or changed); "
            "pass --allow-data-change to run anyway"
        )
    newer = new_keys(logged, environment)
    drift = [
        *drift_warnings(logged),
        *(f"{key} is newer than the run: today's value is used" for key in newer),
    ]
    for note in drift:  # said before the run, which can take minutes
        LOG.warning("%s", note)
    result = train(
        cfg,
        dataset=dataset,
        experiment_id=logged.experiment_id,
        run_name=f"{logged.name}-reproduced",
        tags={REPRODUCES_TAG: run_id},
    )
    before = _logged_confusion(tracker, run_id)
    confusion_equal = before is not None and np.array_equal(before, result.test.confusion)
    verdict = replace(
        compare_metrics(logged.metrics, result.metrics, tolerance, confusion_equal),
        run_id=result.run_id,
        link=result.link,
        drift=tuple(drift),
        versions=tuple(version_differences(logged)),
    )
    tracker.set_tags(result.run_id, {VERDICT_TAG: "match" if verdict.matches else "differ"})
    tracker.log_metrics(
        result.run_id,
        {
            "reproduce_max_abs_diff": verdict.max_difference,
            "reproduce_match": float(verdict.matches),
        },
        step=result.epochs_run,
    )
    return verdict
