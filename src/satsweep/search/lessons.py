"""What a sweep teaches, in words: which parameters mattered, which way, and what is noise.

Importances come from Optuna's fANOVA evaluator: a sweep's finished trials are few,
and PED-ANOVA (Optuna 5's default) compares the top tenth of them, one or two trials,
with the rest, while fANOVA splits the objective's variance between the parameters,
which is the question asked here ("how much did this one move the score?"). Every
claim is held against the sweep's noise band (:class:`~satsweep.search.ledger.Noise`):
a difference the seeds alone produce is reported as "no difference beyond noise",
one just past the band as "at the edge of the noise" (:func:`~satsweep.search.ledger.judge_gap`),
and a sweep whose finished trials all tie claims no winner and no direction. A numeric
parameter's region is judged by the trials inside it against those outside it (its own
effect), and two choices that split the trials alike are named as confounded. A group
of one trial (an option tried once, a span with one trial outside it) is not compared:
its gap may belong to any of that trial's other parameters.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from satsweep.search.ledger import FIDELITY_ATTR, PRUNED_SHORT_ATTR, FinalFit, Noise, judge_gap
from satsweep.search.settings import test_metric

MIN_FOR_DIRECTION = 4  # finished trials needed before a best region or option is named
TOP_SHARE = 0.25  # "the top quarter of finished trials"
# finished trials on each side before two groups of trials are compared: a lone trial
# is one draw of every other parameter too, so its gap may belong to any of them
MIN_PER_GROUP = 2


def mattered(importance: float | None, searched: int) -> bool:
    """An importance above half an equal share: the top trials' values of a parameter that
    did not matter are where the parameters that did happened to put them."""
    return importance is not None and importance > 0.5 / max(searched, 1)


@dataclass(frozen=True)
class RoundScores:
    """What a round of a sweep reached: its best objective and its final model's test score."""

    study_name: str
    best: float | None
    final_test: float | None
    band: float | None = None  # its own noise band, where it measured one
    fidelity: str | None = None  # its best trial's, where recorded (FIDELITY_ATTR)

    @staticmethod
    def of(study: optuna.Study, objective: str) -> RoundScores:
        """The scores of ``study`` (None where it has no finished trial or no final fit)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_value if complete and len(study.directions) == 1 else None
        final = FinalFit.of(study)
        test = final.metrics.get(test_metric(objective)) if final else None
        noise = Noise.of(study)
        fidelity = study.best_trial.user_attrs.get(FIDELITY_ATTR) if best is not None else None
        return RoundScores(study.study_name, best, test, noise.band if noise else None, fidelity)


def previous_round(storage: BaseStorage, name: str | None, objective: str) -> RoundScores | None:
    """The scores of the round a study follows (``sweep.previous``), if it is in ``storage``."""
    if name is None:
        return None
    try:
        return RoundScores.of(optuna.load_study(study_name=name, storage=storage), objective)
    except KeyError:
        return None


def sweep_lessons(
    study: optuna.Study,
    objective: str,
    noise: Noise | None,
    previous: RoundScores | None = None,
) -> str:
    """The lessons as Markdown: a heading, then one bullet per finding."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(study.directions) > 1:
        return "## What mattered\n\n- Lessons are drawn for one objective; see the Pareto front.\n"
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    band = noise.band if noise else None
    noise_words = f"seed noise ±{band:.4f}" if band is not None else "no noise band measured"
    lines = [
        f"## What mattered ({len(study.trials)} trials, {len(complete)} finished; {noise_words}"
        f" on {objective})",
        "",
    ]
    if len(complete) < 2:
        return (
            "\n".join([*lines, f"- {len(complete)} finished trial(s): nothing to compare."]) + "\n"
        )
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=maximize)
    if previous is not None:
        lines.append(f"- {_against(previous, RoundScores.of(study, objective), objective, band)}")
    lines.append(f"- {_winner(ranked, band)}")
    pruned = _pruned_within_noise(study)
    if pruned:
        lines.append(f"- {pruned}")
    if band is None:
        lines.append(
            "- Without a noise band (sweep.noise.repeats=0) a gap between trials may be the "
            "seed's doing: read every difference below as a hint."
        )
    elif all(abs(t.values[0] - ranked[0].values[0]) <= band for t in ranked):
        lines.append(
            f"- All {len(ranked)} finished trials are within the noise band of the best: this "
            "sweep shows no direction for any parameter. Widen the ranges, or train longer so "
            "that differences can exceed the noise."
        )
        return "\n".join(lines) + "\n"
    searched = len(_searched(complete, {}))
    importances = importances_if_enough(study, len(complete), searched)
    if not importances and len(complete) >= MIN_FOR_DIRECTION:
        lines.append(f"- {importance_withheld(len(complete), searched)}")
    names = _searched(complete, importances)
    for name in names:
        importance = importances.get(name)
        lines.append(f"- {_parameter(name, ranked, band, importance, maximize, len(names))}")
    return "\n".join(lines) + "\n"


def _against(before: RoundScores, now: RoundScores, objective: str, band: float | None) -> str:
    """Whether this round paid against the one it follows, measure by measure, held
    against the wider of the two rounds' bands: both scores carry their round's noise."""
    bands = [b for b in (band, before.band) if b is not None]
    band = max(bands) if bands else None
    verdicts = []
    if before.best is not None and now.best is not None and before.fidelity != now.fidelity:
        # a longer or larger trial scores higher whatever its parameters
        ran = (
            f"its trials ran at {before.fidelity}, now at {now.fidelity}"
            if before.fidelity and now.fidelity
            else "one round's trials did not record their fidelity (an older satsweep)"
        )
        verdicts.append(f"best {objective} not compared: {ran}")
        before = dataclasses.replace(before, best=None)
    for label, old, new in (
        (f"best {objective}", before.best, now.best),
        (f"final model {test_metric(objective)}", before.final_test, now.final_test),
    ):
        if old is None or new is None:
            continue
        change = new - old
        verdict = {
            "unjudged": "unjudged without a noise band",
            "noise": "no change beyond noise",
            "edge": "at the edge of the noise" + (", paid" if change > 0 else ", worse"),
            "clear": "paid" if change > 0 else "worse",
        }[judge_gap(change, band)]
        verdicts.append(f"{label} {old:.4f} -> {new:.4f} ({change:+.4f}): {verdict}")
    told = "; ".join(verdicts) or "nothing to compare yet"
    against = f" (band {band:.4f}, the wider of the two rounds')" if band is not None else ""
    return f"Against the previous round, study `{before.study_name}`{against}: {told}."


def _winner(ranked: list[FrozenTrial], band: float | None) -> str:
    best, second = ranked[0], ranked[1]
    gap = abs(best.values[0] - second.values[0])
    judged = judge_gap(gap, band)
    if judged == "noise":
        tied = [t.number for t in ranked if abs(t.values[0] - best.values[0]) <= (band or 0.0)]
        return (
            f"No winner beyond noise: trials {', '.join(map(str, tied))} are within "
            f"{band:.4f} of the best ({best.values[0]:.4f})."
        )
    lead = (
        f"Trial {best.number} leads ({best.values[0]:.4f}) by {gap:.4f} over trial {second.number}"
    )
    if judged == "edge":
        return (
            f"{lead}, at the edge of the noise band ({band:.4f}): not a clear winner; "
            "more seeds (sweep.noise.repeats) would tell."
        )
    return f"{lead}" + (f", clearly beyond the band of {band:.4f}." if band else ".")


def _pruned_within_noise(study: optuna.Study) -> str | None:
    """The pruned trials that fell short by less than their split resolves, if any: a
    median of a few trials at an early epoch is a coin's toss for them, not a verdict."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if PRUNED_SHORT_ATTR in t.user_attrs
    ]
    if not trials:
        return None
    numbers = ", ".join(str(t.number) for t in trials)
    return (
        f"Pruned within the noise: trial(s) {numbers} fell short of the pruner's threshold by "
        "less than the validation split resolves. They were stopped to save time; their "
        "parameters are untested, not worse."
    )


def needed_for_importance(searched: int) -> int:
    """Finished trials before fANOVA's importances are told or acted on: more than the
    parameters searched. On AID's quick sweep (4 finished, 5 parameters) the evaluator's
    own seed reordered them, all between 0.10 and 0.33 (docs/model-quality.md)."""
    return max(MIN_FOR_DIRECTION, searched + 1)


def importances_if_enough(study: optuna.Study, finished: int, searched: int) -> dict[str, float]:
    """fANOVA's importances once ``finished`` trials are enough for ``searched`` parameters;
    {} before: a forest fitted on fewer trials than parameters ranks noise."""
    if finished < needed_for_importance(searched):
        return {}
    return param_importances(study)


def importance_withheld(finished: int, searched: int) -> str:
    """Why no importance is shown, and what that means for the gaps that follow."""
    return (
        f"Importances (fANOVA) need more finished trials than searched parameters "
        f"({needed_for_importance(searched)} here, {finished} finished): not shown, as with "
        "fewer their ranking is noise; a gap below may belong to another parameter."
    )


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's fANOVA importance of each parameter (seeded); {} where it cannot be computed."""
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature notes
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
            return {name: float(value) for name, value in found.items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _searched(complete: list[FrozenTrial], importances: dict[str, float]) -> list[str]:
    names = sorted({name for t in complete for name in t.params})
    return sorted(names, key=lambda name: -importances.get(name, 0.0))


def _finished_trials(count: int) -> str:
    return f"{count} finished trial" + ("" if count == 1 else "s")


def _parameter(
    name: str,
    ranked: list[FrozenTrial],
    band: float | None,
    importance: float | None,
    maximize: bool,
    searched: int,
) -> str:
    """One parameter's lesson: its importance, then its best option or region, or noise."""
    head = f"`{name}`" + (f" (importance {importance:.2f})" if importance is not None else "")
    having = [t for t in ranked if name in t.params]
    if len(having) < MIN_FOR_DIRECTION:
        return (
            f"{head}: {_finished_trials(len(having))} set it, too few for a direction "
            f"({MIN_FOR_DIRECTION} needed: `satsweep next` keeps its round's first "
            f"{MIN_FOR_DIRECTION} from the pruner)."
        )
    if importance is not None and not mattered(importance, searched):
        return f"{head}: did not matter here (less than half an equal share of the importance)."
    choice = isinstance(having[0].distributions[name], CategoricalDistribution)
    describe = _options if choice else _region
    seen = describe(name, having, band, maximize)
    twin = confounded_with(name, ranked)
    if twin is not None:
        return (
            f"{head}: it splits the finished trials exactly as `{twin}` does, so this sweep "
            f"cannot tell which of the two moved the score ({seen.removesuffix('.')})."
        )
    return f"{head}: {seen}"


def confounded_with(name: str, ranked: list[FrozenTrial]) -> str | None:
    """Another searched parameter that splits the finished trials exactly as ``name`` does
    (by option for a choice, inside or outside the top trials' span for a range): a
    difference between the groups belongs to either."""
    mine = _groups(name, ranked)
    if len(mine) < 2:
        return None
    others = sorted({key for t in ranked for key in t.params} - {name})
    return next((key for key in others if _groups(key, ranked) == mine), None)


def _groups(key: str, ranked: list[FrozenTrial]) -> frozenset[frozenset[int]]:
    having = [t for t in ranked if key in t.params]
    if not having:
        return frozenset()
    if isinstance(having[0].distributions[key], CategoricalDistribution):
        by_option: dict[str, set[int]] = defaultdict(set)
        for trial in having:
            by_option[repr(trial.params[key])].add(trial.number)
        return frozenset(frozenset(numbers) for numbers in by_option.values())
    region = Region.of(key, having)
    inside = {t.number for t in having if region.low <= float(t.params[key]) <= region.high}
    outside = {t.number for t in having} - inside
    return frozenset(frozenset(group) for group in (inside, outside) if group)


def _options(name: str, having: list[FrozenTrial], band: float | None, maximize: bool) -> str:
    by_option: dict[str, list[float]] = defaultdict(list)
    for trial in having:
        by_option[str(trial.params[name])].append(trial.values[0])
    means = {option: statistics.fmean(values) for option, values in by_option.items()}
    order = sorted(means, key=lambda option: means[option], reverse=maximize)
    listed = ", ".join(f"{o}: {means[o]:.4f} ({len(by_option[o])})" for o in order)
    if len(order) < 2:
        return f"every finished trial chose {order[0]}: nothing to compare."
    compared = [o for o in order if len(by_option[o]) >= MIN_PER_GROUP]
    thin = [o for o in order if o not in compared]
    if len(compared) < 2:
        return (
            f"too few trials per option to compare (mean, trials: {listed}; {MIN_PER_GROUP} "
            "an option needed: one trial is one draw of every other parameter too)."
        )
    listed += f"; {', '.join(thin)}: too few to compare" if thin else ""
    judged = judge_gap(means[compared[0]] - means[compared[-1]], band)
    if judged == "noise":
        return f"no difference beyond noise between its options (mean, trials: {listed})."
    if judged == "edge":
        return f"{compared[0]} did best, at the edge of the noise (mean, trials: {listed})."
    return f"{compared[0]} did best (mean, trials: {listed})."


@dataclass(frozen=True)
class Region:
    """Where the top trials put a numeric parameter, and how trials inside that span
    scored against trials outside it: the parameter's own effect, not the top trials' lead."""

    low: float
    high: float
    top_count: int
    inside: float  # mean objective of the trials whose value lies in [low, high]
    outside: float | None  # the same outside it; None when no trial lies outside
    outside_count: int

    def gain(self, maximize: bool) -> float | None:
        """How much better the span scored than the rest of the range (negative: worse)."""
        if self.outside is None:
            return None
        return (self.inside - self.outside) * (1.0 if maximize else -1.0)

    @staticmethod
    def of(name: str, ranked: list[FrozenTrial]) -> Region:
        """The region of ``name`` among ``ranked`` (finished trials, best first)."""
        top_count = max(2, math.ceil(TOP_SHARE * len(ranked)))
        values = [float(t.params[name]) for t in ranked[:top_count]]
        low, high = min(values), max(values)
        inside = [t.values[0] for t in ranked if low <= float(t.params[name]) <= high]
        outside = [t.values[0] for t in ranked if not low <= float(t.params[name]) <= high]
        return Region(
            low,
            high,
            top_count,
            statistics.fmean(inside),
            statistics.fmean(outside) if outside else None,
            len(outside),
        )


def _region(name: str, having: list[FrozenTrial], band: float | None, maximize: bool) -> str:
    region = Region.of(name, having)
    everywhere = sorted(float(t.params[name]) for t in having)
    span = (
        f"at {region.low:.3g}"
        if f"{region.low:.3g}" == f"{region.high:.3g}"
        else f"between {region.low:.3g} and {region.high:.3g}"
    )
    where = (
        f"the top {region.top_count} finished trials lie {span} "
        f"(tried {everywhere[0]:.3g} to {everywhere[-1]:.3g})"
    )
    gain = region.gain(maximize)
    if gain is None:
        return f"{where}: no finished trial outside that span to compare with."
    if region.outside_count < MIN_PER_GROUP:
        return (
            f"{where}: {region.outside_count} finished trial outside that span, too few to "
            f"compare with ({MIN_PER_GROUP} needed)."
        )
    against = (
        f"trials in that span score {region.inside:.4f} on average, the "
        f"{region.outside_count} outside it {region.outside:.4f}"
    )
    judged = judge_gap(gain, band)
    if judged == "noise":
        return f"{where}, but {against}: no difference beyond noise."
    if gain < 0:
        return f"{where}, but {against}: the span does worse than the rest, no region to name."
    if judged == "edge":
        return f"{where}; {against}, at the edge of the noise."
    return f"{where}; {against}."
