"""What a sweep teaches, in words: which parameters mattered, which way, and what is noise.

Importances come from Optuna's own evaluator (PED-ANOVA, Optuna 5's default). Every
claim is held against the sweep's noise band (:class:`~satsweep.search.ledger.Noise`):
a difference the seeds alone produce is reported as "no difference beyond noise",
and a sweep whose finished trials all tie claims no winner and no direction.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from satsweep.search.ledger import Noise

MIN_FOR_DIRECTION = 4  # finished trials needed before a best region or option is named
TOP_SHARE = 0.25  # "the top quarter of finished trials"


def sweep_lessons(study: optuna.Study, objective: str, noise: Noise | None) -> str:
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
    lines.append(f"- {_winner(ranked, band)}")
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
    # an importance fitted on a handful of trials ranks noise: shown from a few up
    importances = _importances(study) if len(complete) >= MIN_FOR_DIRECTION else {}
    for name in _searched(complete, importances):
        lines.append(f"- {_parameter(name, ranked, band, importances.get(name), maximize)}")
    return "\n".join(lines) + "\n"


def _winner(ranked: list[FrozenTrial], band: float | None) -> str:
    best, second = ranked[0], ranked[1]
    gap = abs(best.values[0] - second.values[0])
    if band is not None and gap <= band:
        tied = [t.number for t in ranked if abs(t.values[0] - best.values[0]) <= band]
        return (
            f"No winner beyond noise: trials {', '.join(map(str, tied))} are within "
            f"{band:.4f} of the best ({best.values[0]:.4f})."
        )
    beyond = f", beyond the band of {band:.4f}" if band is not None else ""
    return (
        f"Trial {best.number} leads ({best.values[0]:.4f}) by {gap:.4f} over trial "
        f"{second.number}{beyond}."
    )


def _importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's importance of each parameter (PED-ANOVA); {} where it cannot be computed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature notes
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _searched(complete: list[FrozenTrial], importances: dict[str, float]) -> list[str]:
    names = sorted({name for t in complete for name in t.params})
    return sorted(names, key=lambda name: -importances.get(name, 0.0))


def _parameter(
    name: str,
    ranked: list[FrozenTrial],
    band: float | None,
    importance: float | None,
    maximize: bool,
) -> str:
    """One parameter's lesson: its importance, then its best option or region, or noise."""
    head = f"`{name}`" + (f" (importance {importance:.2f})" if importance is not None else "")
    having = [t for t in ranked if name in t.params]
    if len(having) < MIN_FOR_DIRECTION:
        return (
            f"{head}: {len(having)} finished trials set it, too few for a direction "
            f"(raise sweep.n_trials)."
        )
    if isinstance(having[0].distributions[name], CategoricalDistribution):
        return f"{head}: {_options(name, having, band, maximize)}"
    return f"{head}: {_region(name, having, band)}"


def _options(name: str, having: list[FrozenTrial], band: float | None, maximize: bool) -> str:
    by_option: dict[str, list[float]] = defaultdict(list)
    for trial in having:
        by_option[str(trial.params[name])].append(trial.values[0])
    means = {option: statistics.fmean(values) for option, values in by_option.items()}
    order = sorted(means, key=lambda option: means[option], reverse=maximize)
    listed = ", ".join(f"{o}: {means[o]:.4f} ({len(by_option[o])})" for o in order)
    if len(order) < 2:
        return f"every finished trial chose {order[0]}: nothing to compare."
    spread = abs(means[order[0]] - means[order[-1]])
    if band is not None and spread <= band:
        return f"no difference beyond noise between its options (mean, trials: {listed})."
    return f"{order[0]} did best (mean, trials: {listed})."


def _region(name: str, having: list[FrozenTrial], band: float | None) -> str:
    top_count = max(2, math.ceil(TOP_SHARE * len(having)))
    top, rest = having[:top_count], having[top_count:]
    values = sorted(float(t.params[name]) for t in top)
    everywhere = sorted(float(t.params[name]) for t in having)
    lead = statistics.fmean(t.values[0] for t in top) - statistics.fmean(t.values[0] for t in rest)
    region = (
        f"the top {top_count} finished trials lie between {values[0]:.3g} and {values[-1]:.3g}"
        f" (tried {everywhere[0]:.3g} to {everywhere[-1]:.3g})"
    )
    if band is not None and abs(lead) <= band:
        return f"{region}, but they lead the rest by {abs(lead):.4f}, within noise."
    return f"{region}, leading the rest by {abs(lead):.4f}."
