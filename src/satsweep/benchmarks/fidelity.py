"""``make bench-fidelity``: does the cheap search rank configurations as the answer would?

Usage: ``python -m satsweep.benchmarks.fidelity sweep=quick [OVERRIDE ...]``, with
``bench.configs=N`` (6) and ``bench.high=[OVERRIDE,...]`` (the answer's extra overrides,
e.g. ``[data.image_size=48]``) taken out of the overrides first.

A sweep ranks configurations at low fidelity (its trials: an image budget, a small
image size, few epochs) and answers at a high one (its final fit). That pays only when
the ranks carry over. This draws ``N`` configurations from the sweep's own space
(Optuna's ``RandomSampler``, seed 0, so every run draws the same ones), trains each at
both fidelities through the one training path, and reports Spearman's rank correlation
between the two validation scores, and the regret: how far the cheap winner's big score
falls below the best big score. Every run logs to MLflow as usual (experiment
``bench-fidelity``). The table goes to the terminal and, as JSON, to
``outputs/bench/fidelity-latest.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import pandas as pd
from rich.console import Console
from rich.table import Table

from satsweep.benchmarks.harness import save_record
from satsweep.quiet import quiet_libraries
from satsweep.search.job import SweepJob, prepare_job
from satsweep.search.settings import result_metric
from satsweep.training import train

CONFIGS_KEY = "bench.configs="
HIGH_KEY = "bench.high="
DEFAULT_CONFIGS = 6


@dataclass(frozen=True)
class Pair:
    """One configuration's validation score at the search's fidelity and at the answer's."""

    overrides: list[str]
    low: float
    high: float
    low_seconds: float
    high_seconds: float


@dataclass(frozen=True)
class Verdict:
    """How well the low fidelity ranked the configurations for the high one."""

    spearman: float
    cheap_winner_high: float  # the high score of the configuration the low fidelity picked
    best_high: float
    regret: float


def drawn_configurations(job: SweepJob, count: int) -> list[list[str]]:
    """``count`` configurations from the sweep's space, the same ones in every run."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        drawn.append(job.space.suggest(trial))
        study.tell(trial, 0.0)
    return drawn


def measure(job: SweepJob, overrides: list[str], high: list[str]) -> Pair:
    """Train one configuration at both fidelities; its two validation scores and times."""
    metric = result_metric(job.settings.objectives[0])
    tagged = ["tracking.experiment=bench-fidelity", "tracking.log_model=false"]
    scores, seconds = [], []
    for extra in ([], [*job.settings.final_fit.overrides, *high]):
        started = time.perf_counter()
        result = train(job.trial_config([*overrides, *extra, *tagged]))
        seconds.append(time.perf_counter() - started)
        scores.append(float(result.metrics[metric]))
    return Pair(overrides, scores[0], scores[1], seconds[0], seconds[1])


def judge(pairs: list[Pair], maximize: bool) -> Verdict:
    """Spearman's rho of the two fidelities' scores, and the cheap winner's regret."""
    frame = pd.DataFrame([asdict(p) for p in pairs])
    rho = float(frame["low"].corr(frame["high"], method="spearman"))
    pick = frame["low"].idxmax() if maximize else frame["low"].idxmin()
    best = frame["high"].max() if maximize else frame["high"].min()
    chosen = float(frame.loc[pick, "high"])
    return Verdict(rho, chosen, float(best), abs(float(best) - chosen))


def _split_arguments(arguments: list[str]) -> tuple[int, list[str], list[str]]:
    count, high, rest = DEFAULT_CONFIGS, [], []
    for argument in arguments:
        if argument.startswith(CONFIGS_KEY):
            count = int(argument.removeprefix(CONFIGS_KEY))
        elif argument.startswith(HIGH_KEY):
            high = [o.strip() for o in argument.removeprefix(HIGH_KEY).strip("[]").split(",")]
        else:
            rest.append(argument)
    return count, [o for o in high if o], rest


def main() -> None:
    """Draw, train at both fidelities, judge, print and write the record."""
    count, high, overrides = _split_arguments(sys.argv[1:])
    quiet_libraries()
    job = prepare_job(overrides or ["sweep=quick"])
    maximize = job.settings.directions[0] == "maximize"
    started = time.perf_counter()
    pairs = [measure(job, drawn, high) for drawn in drawn_configurations(job, count)]
    verdict = judge(pairs, maximize)
    seconds = time.perf_counter() - started
    low = f"{job.base.data.image_size} px, image budget {job.base.data.max_images}"
    answer = " ".join([*job.settings.final_fit.overrides, *high])
    title = f"fidelity on {job.base.data.name}: {low} against {answer} ({seconds / 60:.1f} min)"
    _print(pairs, verdict, title)
    record = {
        "title": title,
        "seconds": seconds,
        "verdict": asdict(verdict),
        "pairs": [asdict(p) for p in pairs],
    }
    save_record(Path(job.base.paths.outputs) / "bench", "fidelity", record)


def _print(pairs: list[Pair], verdict: Verdict, title: str) -> None:
    table = Table(title=title)
    for column in ("configuration", "low", "high", "low s", "high s"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for pair in pairs:
        table.add_row(
            " ".join(pair.overrides),
            f"{pair.low:.4f}",
            f"{pair.high:.4f}",
            f"{pair.low_seconds:.0f}",
            f"{pair.high_seconds:.0f}",
        )
    console = Console(width=max(160, Console().width))
    console.print(table)
    console.print(
        f"Spearman's rho {verdict.spearman:.2f}; the cheap winner scores "
        f"{verdict.cheap_winner_high:.4f} at the high fidelity, the best {verdict.best_high:.4f}"
        f" (regret {verdict.regret:.4f})"
    )


if __name__ == "__main__":
    main()
