"""The next round of a sweep: a new sweep file written from what the last one showed.

``satsweep next STUDY`` reads the study and the sweep it ran (its ``job.json``) and
writes a sweep file in the same grammar, to edit or run as it is. Parameters whose
best region or option leads by more than the noise band are narrowed around it; those
that showed no difference beyond noise are fixed at the best trial's value and left
out of the space; an option or a side of a span that fewer than two finished trials
tried is not judged (one trial is one draw of every other parameter as well), so its
key stays searched; with too few finished trials nothing is judged, and the next round
makes its first trials unprunable (or runs more) so that it finishes more trials than
there are parameters. When every finished trial tied, the file offers twice the trials'
budget (more epochs, more data) as overrides: the same round would tie again. Every
change carries a YAML comment that says why.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from satsweep.config import load_environment, project_root
from satsweep.data.catalog import build_catalog
from satsweep.errors import UserError
from satsweep.schema import DataConfig
from satsweep.search.job import SweepJob, load_job
from satsweep.search.ledger import FinalFit, Noise, judge_gap, load_study
from satsweep.search.lessons import (
    MIN_FOR_DIRECTION,
    MIN_PER_GROUP,
    Region,
    confounded_with,
    importances_if_enough,
    mattered,
    needed_for_importance,
)
from satsweep.search.space import Dimension
from satsweep.search.storage import open_storage
from satsweep.search.study import PRUNERS

# Keys whose values are fractions: a key the diagnosis names is tried over this range.
FRACTION_RANGES = {
    "model.dropout": "interval(0.0, 0.5)",
    "trainer.augment.translate": "choice(0.0, 0.125)",
    "trainer.augment.mixup": "choice(0.0, 0.2)",
    "trainer.label_smoothing": "choice(0.0, 0.1)",
}
NO_DECAY_RANGE = "tag(log, interval(1e-5, 1e-2))"  # weight decay named while it is 0
# Not searched even when named: they change the data the scores are measured on, or
# only how a trained model's scores are read.
BY_HAND = ("data.", "trainer.threshold.")
WIDEN_LOG = 1.5  # a narrowed log range reaches this factor beyond the top trials' values
WIDEN_LINEAR = 0.25  # a narrowed linear range reaches this share of its width beyond them


@dataclass(frozen=True)
class Decision:
    """What the next round does with one searched key, and why."""

    key: str
    expression: str | None  # the new search expression; None: fixed at ``value``
    value: Any
    why: str


@dataclass(frozen=True)
class NextRound:
    """The next round's sweep file and the command that runs it."""

    study_name: str
    text: str
    overrides: tuple[str, ...]  # what runs it: ``sweep=<round>`` and the last round's others
    path: Path | None = None  # where it was written, once it is

    @property
    def command(self) -> str:
        """The shell command that runs the round."""
        return " ".join(["satsweep sweep", *self.overrides])

    def _repr_markdown_(self) -> str:
        """The file and its command, as a notebook shows them."""
        where = f"`{self.path}`" if self.path else "not written yet"
        return (
            f"**Next round** (study `{self.study_name}`): {where}\n\n"
            f"```yaml\n{self.text}```\n\nRun it with: `{self.command}`\n"
        )


def next_study_name(study_name: str) -> str:
    """``quick`` -> ``quick_r2``; ``quick_r2`` -> ``quick_r3``."""
    found = re.fullmatch(r"(.+)_r(\d+)", study_name)
    return f"{found[1]}_r{int(found[2]) + 1}" if found else f"{study_name}_r2"


def plan_next_round(study: optuna.Study, job: SweepJob, noise: Noise | None) -> NextRound:
    """The next round of ``study``, which ran ``job``; refuses what it cannot plan."""
    if len(study.directions) > 1:
        raise UserError(
            f"satsweep next plans one-objective studies; {study.study_name!r} has "
            f"{len(study.directions)} objectives: edit its sweep file by hand"
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(
            f"study {study.study_name!r} has no finished trial: nothing to learn from yet; "
            "run its sweep further (sweep.n_trials)"
        )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=maximize)
    band = noise.band if noise else 0.0
    judged = [d for d in job.space.dimensions if d.condition is None]  # conditional: as written
    importances = importances_if_enough(study, len(complete), len(judged))
    decisions = [
        _decide(dimension, ranked, band, maximize, importances.get(dimension.key), len(judged))
        for dimension in judged
    ]
    if not importances and len(complete) >= MIN_FOR_DIRECTION:
        # fewer trials than parameters: any gap may be another parameter's
        needed = needed_for_importance(len(judged))
        why = (
            f"kept: {len(complete)} finished trials cannot tell {len(judged)} parameters "
            f"apart ({needed} needed)"
        )
        decisions = [Decision(d.key, _expression(d), None, why) for d in judged]
    all_tied = noise is not None and all(
        abs(t.values[0] - ranked[0].values[0]) <= band for t in ranked
    )
    if all_tied:
        # nothing beat the noise: fixing keys at a "best" value would fix them at chance
        decisions = [
            Decision(
                d.key,
                _expression(d),
                None,
                "kept: every finished trial is within the noise band of the best; to see "
                "past the noise, train longer (trainer.epochs) or on more data",
            )
            for d in judged
        ]
    added, by_hand = _from_diagnosis(FinalFit.of(study), job)
    settings = _setting_changes(job, len(complete), needed_for_importance(len(judged)))
    name = next_study_name(study.study_name)
    higher = _higher_fidelity(job, {d.key for d in added}) if all_tied else []
    text = _render(study, job, name, [*decisions, *added], noise, settings, by_hand, higher)
    in_file = {d.key for d in decisions if d.expression is None}
    in_file |= {"sweep", "sweep.study_name", "sweep.previous"}
    in_file |= {f"sweep.{change.key}" for change in settings}
    return NextRound(name, text, _overrides(job, name, in_file))


def _from_diagnosis(final: FinalFit | None, job: SweepJob) -> tuple[list[Decision], list[str]]:
    """The keys the final model's diagnosis names, added to the space around their current
    values; and the notes on those left to the user."""
    if final is None:
        return [], []
    searched = {d.key for d in job.space.dimensions}
    added: dict[str, Decision] = {}
    by_hand: list[str] = []
    for rule, keys in final.diagnosis.items():
        for key in keys:
            if key in searched or key in added:
                continue
            expression = None if key.startswith(BY_HAND) else _around(key, _current(job, key))
            if expression is None:
                by_hand.append(f"{key} ({rule}): set it by hand, it is not searched")
                continue
            why = f"added: the final model's diagnosis found {rule}"
            added[key] = Decision(key, expression, None, why)
    return list(added.values()), by_hand


def _higher_fidelity(job: SweepJob, added: set[str]) -> list[str]:
    """Overrides that give each trial twice the budget, offered when every trial tied;
    none for a key this round searched or the next one ``added`` to its space.

    A round whose trials all tied would tie again at the same fidelity; longer trials
    or more data let real differences grow past the noise. They are offered, not set:
    a trial then costs about twice as long, and its scores are no longer comparable
    with this round's (the final models' still are), so the user chooses.
    """
    # a searched key varies by trial: the offer would misstate it and fight the search
    searched = {d.key for d in job.space.dimensions} | added
    epochs = job.base.trainer.epochs
    offers = (
        []
        if "trainer.epochs" in searched
        else [f"  trainer.epochs={2 * epochs}    (the trials ran {epochs} epochs)"]
    )
    data_keys = {"data.max_images", "data.train_share"}
    more_data = None if searched & data_keys else _more_data(job.base.data)
    offers += [more_data] if more_data else []
    if not offers:
        return []
    return [
        "Every finished trial tied with the best: run as written, this round is likely to",
        "tie again. To let differences exceed the noise, give each trial twice the budget",
        "with one more override on the command that runs it (a trial then takes about twice",
        "as long, and its scores are not comparable with the last round's; the final",
        "models' are):",
        *offers,
    ]


def _more_data(data: DataConfig) -> str | None:
    """``data.train_share`` doubled (up to all), or else ``data.max_images`` doubled where
    that draws more images (not where the set, or ``max_per_class``, holds no more, nor
    where this machine cannot read the set)."""
    if data.train_share < 1:
        share = min(1.0, 2 * data.train_share)
        return (
            f"  data.train_share={share:g}    (the trials trained on {data.train_share:g} of "
            "the training split; validation stays the same images)"
        )
    if data.max_images is None:
        return None
    doubled = data.model_copy(update={"max_images": 2 * data.max_images})
    try:
        now, then = (len(build_catalog(cfg).sources) for cfg in (data, doubled))
    except (UserError, OSError):
        return None
    if then <= now:
        return None
    return (
        f"  data.max_images={doubled.max_images}    (the trials drew on {now} images, this on "
        f"{then}: more to learn from and to validate on)"
    )


def _current(job: SweepJob, key: str) -> Any:
    node: Any = job.base.model_dump()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _around(key: str, value: Any) -> str | None:
    """A search expression for ``key`` around its current ``value``; None: not searchable."""
    if key in FRACTION_RANGES:
        return FRACTION_RANGES[key]
    if isinstance(value, bool):
        return "choice(false, true)"
    if isinstance(value, int):
        return f"choice({value}, {2 * value})"
    if isinstance(value, float) and value > 0:
        return f"tag(log, interval({value / 3:.4g}, {value * 3:.4g}))"
    if key == "optimizer.weight_decay":
        return NO_DECAY_RANGE
    return None


@dataclass(frozen=True)
class SettingChange:
    """A change to the sweep's own settings (a key under ``sweep``), and why."""

    key: str  # e.g. "pruner.options.n_startup_trials"
    value: Any
    why: str


# Pruners whose ``n_startup_trials`` lets the first trials of a study run to the end.
STARTUP_PRUNERS = ("median", "percentile")


def _startup_trials(pruner: str, options: dict[str, Any]) -> int:
    """The pruner's ``n_startup_trials``: the sweep file's, else Optuna's own default."""
    if "n_startup_trials" in options:
        return int(options["n_startup_trials"])
    return int(inspect.signature(PRUNERS[pruner]).parameters["n_startup_trials"].default)


def _setting_changes(job: SweepJob, finished: int, needed: int) -> list[SettingChange]:
    """A fresh draw of trials; and, when too few finished to judge, trials that finish:
    ``needed`` for the parameters to be told apart."""
    settings = job.settings
    changes = []
    if settings.sampler.seed is not None:
        changes.append(
            SettingChange(
                "sampler.seed",
                settings.sampler.seed + 1,
                f"a new draw: seed {settings.sampler.seed} would repeat the last round's "
                "first trials wherever the space is unchanged",
            )
        )
    if finished >= needed:
        return changes
    why = f"the last round finished {finished}, and its parameters are judged from {needed}"
    pruner = settings.pruner
    if pruner.name in STARTUP_PRUNERS and _startup_trials(pruner.name, pruner.options) < needed:
        # more trials alone do not help: a pruner that compares with the few finished
        # ones prunes nearly every newcomer (quick on Harvey: 16 trials, 2 finished)
        changes.append(
            SettingChange(
                "pruner.options.n_startup_trials",
                needed,
                f"the first {needed} trials are never pruned: {why}",
            )
        )
        if settings.n_trials is None or settings.n_trials >= needed:
            return changes
    if settings.n_trials is not None:  # a sweep bounded by time alone keeps its bound
        more = max(2 * settings.n_trials, needed)
        changes.append(SettingChange("n_trials", more, f"more trials: {why}"))
    return changes


def _decide(
    dimension: Dimension,
    ranked: list[FrozenTrial],
    band: float,
    maximize: bool,
    importance: float | None,
    searched: int,
) -> Decision:
    key, best = dimension.key, ranked[0]
    if "." not in key:  # a config group: fixing it belongs in the defaults list, by hand
        return Decision(key, _expression(dimension), None, "kept: a config-group choice")
    having = [t for t in ranked if key in t.params]
    if len(having) < MIN_FOR_DIRECTION:
        return Decision(
            key,
            _expression(dimension),
            None,
            f"kept: {len(having)} finished trials, too few to judge",
        )
    thin = _thin_options(dimension, having)
    if thin:  # an untried or once-tried option has shown nothing yet: neither fixed nor dropped
        why = f"kept: {thin} had fewer than {MIN_PER_GROUP} finished trials, too few to judge"
        return Decision(key, _expression(dimension), None, why)
    if importance is not None and not mattered(importance, searched):
        return Decision(
            key,
            None,
            best.params[key],
            f"fixed at the best trial's value: it did not matter (importance "
            f"{importance or 0.0:.2f}, less than half an equal share)",
        )
    twin = confounded_with(key, having)
    if twin is not None:
        why = f"kept: it split the finished trials as {twin} did; this round tells them apart"
        return Decision(key, _expression(dimension), None, why)
    if isinstance(dimension.distribution, CategoricalDistribution):
        return _decide_choice(dimension, having, band, maximize, best)
    return _decide_range(dimension, having, band, maximize, best)


def _thin_options(dimension: Dimension, having: list[FrozenTrial]) -> str:
    """A choice's options that fewer than MIN_PER_GROUP finished trials took, as words."""
    if not isinstance(dimension.distribution, CategoricalDistribution):
        return ""
    taken = [t.params[dimension.key] for t in having]
    thin = [o for o in _choices(dimension) if taken.count(o) < MIN_PER_GROUP]
    return ", ".join(map(str, thin))


def _decide_choice(
    dimension: Dimension, having: list[FrozenTrial], band: float, maximize: bool, best: FrozenTrial
) -> Decision:
    by_option: dict[Any, list[float]] = defaultdict(list)
    for trial in having:
        by_option[trial.params[dimension.key]].append(trial.values[0])
    means = {option: statistics.fmean(values) for option, values in by_option.items()}
    top = max(means.values()) if maximize else min(means.values())
    spread = max(means.values()) - min(means.values())
    judged = judge_gap(spread, band)
    if judged == "noise":
        return _fixed(dimension, best, f"its options' means differ by {spread:.4f}", band)
    if judged == "edge":
        return _kept_at_edge(dimension, f"its options' means differ by {spread:.4f}", band)
    choices = [o for o in _choices(dimension) if o in means]
    kept = [o for o in choices if abs(means[o] - top) <= band]
    dropped = [o for o in _choices(dimension) if o not in kept]
    return Decision(
        dimension.key,
        f"choice({', '.join(_spelled(dimension, o) for o in kept)})" if len(kept) > 1 else None,
        kept[0],
        f"narrowed: {', '.join(map(str, dropped))} fell behind by more than the noise band "
        f"({band:.4f})",
    )


def _fixed(dimension: Dimension, best: FrozenTrial, seen: str, band: float) -> Decision:
    """The key fixed at the best trial's value, as what was seen lies within the noise."""
    why = f"fixed at the best trial's value: {seen}, within the noise band ({band:.4f})"
    return Decision(dimension.key, None, best.params[dimension.key], why)


def _choices(dimension: Dimension) -> list[Any]:
    assert isinstance(dimension.distribution, CategoricalDistribution)
    return list(dimension.distribution.choices)


def _kept_at_edge(dimension: Dimension, seen: str, band: float) -> Decision:
    why = f"kept: {seen}, at the edge of the noise band ({band:.4f}): not yet a finding"
    return Decision(dimension.key, _expression(dimension), None, why)


def _decide_range(
    dimension: Dimension, having: list[FrozenTrial], band: float, maximize: bool, best: FrozenTrial
) -> Decision:
    region = Region.of(dimension.key, having)
    gain = region.gain(maximize)
    span = f"the top {region.top_count} trials' span ({region.low:.3g} to {region.high:.3g})"
    if gain is None:
        seen = f"{span} holds every finished trial"
        return Decision(dimension.key, _expression(dimension), None, f"kept: {seen}")
    if region.outside_count < MIN_PER_GROUP:
        seen = f"{region.outside_count} finished trial outside {span}, too few to judge"
        return Decision(dimension.key, _expression(dimension), None, f"kept: {seen}")
    seen = f"trials in {span} beat the {region.outside_count} outside it by {gain:+.4f}"
    judged = judge_gap(gain, band)
    if judged == "noise":
        return _fixed(dimension, best, seen, band)
    if gain < 0:  # the span holds weak trials too: no region to narrow to
        return Decision(dimension.key, _expression(dimension), None, f"kept: {seen}")
    if judged == "edge":
        return _kept_at_edge(dimension, seen, band)
    low, high = _widened(dimension.distribution, region.low, region.high)
    return Decision(
        dimension.key,
        _range_expression(dimension.distribution, low, high),
        None,
        f"narrowed: {seen}, beyond the noise band ({band:.4f})",
    )


def _widened(distribution: Any, low: float, high: float) -> tuple[float, float]:
    """The top trials' span, a little wider, inside the range searched before."""
    if getattr(distribution, "log", False):
        low, high = low / WIDEN_LOG, high * WIDEN_LOG
    else:
        margin = WIDEN_LINEAR * (high - low or abs(high) or 1.0)
        low, high = low - margin, high + margin
    return max(low, distribution.low), min(high, distribution.high)


def _range_expression(distribution: Any, low: float, high: float) -> str:
    if isinstance(distribution, IntDistribution):
        low_int, high_int = math.floor(low), math.ceil(high)
        if distribution.log:
            return f"tag(log, int(interval({low_int}, {high_int})))"
        step = f", {distribution.step}" if distribution.step != 1 else ""
        return f"range({low_int}, {high_int + 1}{step})"
    assert isinstance(distribution, FloatDistribution)
    interval = f"interval({low:.4g}, {high:.4g})"
    return f"tag(log, {interval})" if distribution.log else interval


def _expression(dimension: Dimension) -> str:
    distribution = dimension.distribution
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(_spelled(dimension, o) for o in _choices(dimension))})"
    return _range_expression(distribution, distribution.low, distribution.high)


def _spelled(dimension: Dimension, value: Any) -> str:
    return dimension.override(value).split("=", 1)[1]


def _render(
    study: optuna.Study,
    job: SweepJob,
    name: str,
    decisions: list[Decision],
    noise: Noise | None,
    settings: list[SettingChange],
    by_hand: list[str],
    advice: list[str],
) -> str:
    previous = job.file.removeprefix("sweeps/").removesuffix(".yaml")
    finished = sum(t.state == TrialState.COMPLETE for t in study.trials)
    band = f"a noise band of {noise.band:.4f}" if noise else "no noise band (noise.repeats=0)"
    header = [
        "# @package _global_",
        f"# Round {name.rsplit('_r', 1)[1]} of study {study.study_name} ({job.file}), written by",
        f"# `satsweep next {study.study_name}` on {datetime.date.today()} from its "
        f"{len(study.trials)} trials ({finished} finished, {band}).",
        "# Edit it freely; every change from the last round says why.",
        "defaults:",
        f"  - {previous}                 # the last round: data, model, recipe, settings",
        "  - _self_",
        "",
    ]
    fixed = _nested({d.key: _short(d.value) for d in decisions if d.expression is None})
    body = yaml.safe_dump(fixed, sort_keys=False).splitlines() if fixed else []
    why_fixed = {d.key: d.why for d in decisions if d.expression is None}
    sweep = [
        "sweep:",
        f"  study_name: {name}",
        f"  previous: {study.study_name}        # this round is judged against it",
        *(line for change in settings for line in _setting_lines(change)),
        "  params:",
        *(
            f"    {d.key}: {d.expression if d.expression is not None else 'null'}"
            f"    # {d.why if d.expression is not None else 'fixed above: ' + d.why}"
            for d in decisions
        ),
    ]
    comments = [f"# {key}: {why}" for key, why in why_fixed.items()]
    comments += [f"# the final model's diagnosis also named {note}" for note in by_hand]
    comments += [f"# {line}" for line in advice]
    return "\n".join([*header, *comments, *body, "", *sweep]) + "\n"


def _setting_lines(change: SettingChange) -> list[str]:
    """``pruner.options.n_startup_trials`` as nested YAML lines under ``sweep:``."""
    *parents, leaf = change.key.split(".")
    lines = [f"{'  ' * (depth + 1)}{part}:" for depth, part in enumerate(parents)]
    indent = "  " * (len(parents) + 1)
    return [*lines, f"{indent}{leaf}: {change.value}        # {change.why}"]


def _short(value: Any) -> Any:
    """A float to four digits: the file is read by people, and the key did not matter."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _overrides(job: SweepJob, name: str, in_file: set[str]) -> tuple[str, ...]:
    """The last round's command-line overrides, less those the new file sets: on the
    command line they would win over the file."""
    kept = [o for o in job.base_overrides if o.split("=", 1)[0].lstrip("+~") not in in_file]
    return (f"sweep={name}", *kept)


def write_next_round(study_name: str, overrides: Sequence[str], out: Path | None) -> NextRound:
    """Plan the next round of ``study_name`` and write its sweep file (``sweeps/`` by default).

    ``overrides`` say where the study and its outputs are, as for ``satsweep compare``.
    """
    environment = load_environment(overrides)
    study = load_study(open_storage(environment.storage), study_name, environment.storage.url)
    path = Path(environment.paths.outputs) / "sweeps" / study_name / "job.json"
    if not path.is_file():
        raise UserError(
            f"no record of the sweep that study {study_name!r} ran ({path}): next reads it; "
            "run `satsweep sweep` for the study with these outputs (paths.outputs)"
        )
    plan = plan_next_round(study, load_job(path), Noise.of(study))
    target = out or project_root() / "sweeps" / f"{plan.study_name}.yaml"
    if target.exists():
        raise UserError(f"{target} exists: remove it, or write elsewhere with --out FILE")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(plan.text)
    except OSError as error:
        raise UserError(
            f"cannot write {target} ({error.strerror or error}): use --out FILE"
        ) from error
    return dataclasses.replace(plan, path=target)
