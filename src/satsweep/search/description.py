"""The sweep's summary in Markdown, shown by the MLflow UI on its experiment and parent run.

MLflow renders the ``mlflow.note.content`` tag as a run's or an experiment's
description. Writing the sweep's objective, sampler, pruner, space, best trial
and final model there answers "which trial is best, and why?" where users look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from satsweep.links import run_link, runs_link
from satsweep.search.job import SweepJob
from satsweep.search.ledger import Noise
from satsweep.search.settings import result_metric, test_metric

SUMMARY_STATES = ("complete", "pruned", "failed")


def sweep_description(
    job: SweepJob,
    experiment_id: str,
    table: pd.DataFrame,
    best: Mapping[str, Any] | None,
    final: Mapping[str, Any] | None,
    noise: Noise | None = None,
    lessons: str = "",
) -> str:
    """Markdown: what the sweep searched, how, and what it found, with links to the runs.

    The links are relative: the UI that shows the description resolves them. The
    first lines answer what a reader came for (is it real, what mattered, what next),
    because the MLflow UI folds a long description after a few lines.

    ``best`` and ``final`` are leaderboard rows (``trial``, the objectives,
    ``mlflow_run_id``); either is None until it exists.
    """
    settings = job.settings
    objective = settings.objectives[0]
    counts = table["state"].value_counts().to_dict() if not table.empty else {}
    lines = [
        f"## Sweep `{settings.study_name}`",
        "",
        *_answers(settings.study_name, noise, lessons),
        f"- **Objective:** {_objectives(job)}. Each trial logs it as "
        f"`{result_metric(objective)}` once finished; `{objective}` is its per-epoch curve.",
        f"- **Sampler:** {settings.sampler.name} {_options(settings.sampler.options)}; "
        f"**pruner:** {settings.pruner.name} {_options(settings.pruner.options)}.",
        f"- **Trials:** {', '.join(f'{counts.get(s, 0)} {s}' for s in SUMMARY_STATES)} "
        f"(budget: {_budget(settings.n_trials, settings.timeout)}).",
    ]
    if best is not None:
        link = run_link(None, experiment_id, str(best["mlflow_run_id"]))
        lines.append(
            f"- **Best trial:** [trial {best['trial']}]({link}), "
            f"{objective}={_number(best.get(objective))}."
        )
    if noise is not None:
        lines.append(f"- **Seed noise:** {noise_sentence(noise, objective, table)}")
    if final is not None:
        link = run_link(None, experiment_id, str(final["mlflow_run_id"]))
        test = test_metric(objective)
        lines.append(
            f"- **Final model:** [retrained]({link}) with "
            f"`{' '.join(settings.final_fit.overrides)}`: {test}={_number(final.get(test))}."
        )
    lines += [
        f"- **All runs:** [runs table]({runs_link(None, experiment_id, view=True)}).",
        "",
        "| parameter | searched over |",
        "|---|---|",
        *(f"| `{key}` | `{value}` |" for key, value in _space(job).items()),
    ]
    return "\n".join(lines) + "\n"


def _answers(study_name: str, noise: Noise | None, lessons: str) -> list[str]:
    """Three bullets: the noise, the lessons' first finding, the next round's command."""
    findings = [line[2:] for line in lessons.splitlines() if line.startswith("- ")]
    real = (
        f"{noise.spread()}: gaps under {noise.band:.4f} are noise"
        if noise
        else "not measured (sweep.noise.repeats=0)"
    )
    return [
        f"- **Is it real?** {real}.",
        f"- **What mattered?** {findings[0] if findings else 'no finished trial yet.'} "
        "(all of it: *What mattered*, below)",
        f"- **What next?** `satsweep next {study_name}` writes the next round's sweep file.",
    ]


def noise_sentence(noise: Noise, objective: str, table: pd.DataFrame) -> str:
    """What the seeds say: the spread, the band, and which trials it ties with the best."""
    tied = table[table["tied"] == "tied"]["trial"].tolist() if "tied" in table else []
    seeds = ", ".join(str(seed) for seed in noise.seeds)
    values = ", ".join(f"{value:.4f}" for value in noise.values)
    return (
        f"trial {noise.trial} trained again with seeds {seeds} scored {objective} {values} "
        f"({noise.spread()}): differences under {noise.band:.4f} are noise. "
        + (
            f"Tied with the best: trials {', '.join(str(t) for t in tied)}."
            if len(tied) > 1
            else "No other finished trial is within it of the best."
        )
    )


def _objectives(job: SweepJob) -> str:
    pairs = zip(job.settings.directions, job.settings.objectives, strict=True)
    return ", ".join(f"{direction} `{name}`" for direction, name in pairs)


def _space(job: SweepJob) -> dict[str, str]:
    space = dict(job.space_params)
    for condition, params in job.settings.conditional.items():
        space.update({f"{key} (if {condition})": value for key, value in params.items()})
    return space


def _budget(trials: int | None, timeout: float | None) -> str:
    parts = [f"{trials} finished trials"] if trials else []
    parts += [f"{timeout:g} s per invocation"] if timeout else []
    return ", ".join(parts)


def _options(options: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and value == value else "-"
