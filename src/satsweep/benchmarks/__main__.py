"""``make bench``: satsweep against its ceilings, as a table of ratios.

Usage: ``python -m satsweep.benchmarks [--repeats 5] [--trials 8] [--only NAME ...]
[OVERRIDE ...]``. The table goes to the terminal and, as JSON, to
``outputs/bench/`` (``latest.json`` and one file per run).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from satsweep.benchmarks.harness import Comparison, print_rows, write
from satsweep.config import load_environment

NAMES = (
    "startup",
    "cache",
    "augmentation",
    "throughput",
    "overhead",
    "pruning",
    "workers",
    "memory",
)


def main() -> None:
    """``make bench``: run the chosen benchmarks, print the table of ratios, write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="A/B pairs per quick benchmark")
    parser.add_argument("--trials", type=int, default=8, help="trials of the overhead sweep")
    parser.add_argument("--only", nargs="*", metavar="NAME", help=f"some of {', '.join(NAMES)}")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    options = parser.parse_args()
    options.only, overrides = _names_and_overrides(parser, options.only)
    options.overrides += overrides
    # after the arguments are checked: a typo is told before TensorFlow's import, not after
    from satsweep.benchmarks import startup, sweeps, training

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # in-memory studies are not news
    outputs = Path(load_environment(options.overrides).paths.outputs)
    cache = outputs / "bench" / "cache"
    started = time.perf_counter()
    rows: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="satsweep-bench-") as folder:
        scratch = sweeps.Scratch(Path(folder), cache, options.overrides)
        extra = [*options.overrides, f"paths.cache={cache}"]
        plan: dict[str, Callable[[], Comparison | list[Comparison]]] = {
            "startup": lambda: startup.startup(options.repeats),
            "cache": lambda: training.data_cache(Path(folder) / "cache", options.repeats, extra),
            "augmentation": lambda: training.augmentation(
                Path(folder) / "augmentation", options.repeats, extra
            ),
            "throughput": lambda: training.throughput(
                Path(folder) / "throughput", options.repeats, extra
            ),
            "overhead": lambda: sweeps.overhead_and_process_model(scratch, options.trials),
            "pruning": lambda: sweeps.pruning(scratch),
            "workers": lambda: sweeps.workers(scratch),
            "memory": lambda: sweeps.memory(scratch),
        }
        for name in NAMES:
            if name in options.only:
                print(f"benchmark: {name} ...", flush=True)
                result = plan[name]()
                rows += result if isinstance(result, list) else [result]
    seconds = time.perf_counter() - started
    path = write(rows, outputs / "bench", seconds)
    print_rows(rows, f"satsweep benchmarks ({seconds / 60:.1f} min, {os.cpu_count()} cores)")
    print(f"wrote {path}")


def _names_and_overrides(
    parser: argparse.ArgumentParser, only: list[str] | None
) -> tuple[list[str], list[str]]:
    """Split ``--only``'s words into benchmark names and the Hydra overrides that follow them.

    ``--only overhead trainer.epochs=20`` reads as users mean it: an override
    always holds ``=`` or starts with ``~``, a benchmark name never does.
    """
    if only is None:
        return list(NAMES), []
    overrides = [word for word in only if "=" in word or word.startswith("~")]
    names = [word for word in only if word not in overrides]
    for name in names:
        if name not in NAMES:
            parser.error(f"--only {name}: no such benchmark; choose from {', '.join(NAMES)}")
    return names, overrides


if __name__ == "__main__":
    main()
