"""How fast the command line answers when there is no training to do.

``satsweep --help`` and a config error must not wait for TensorFlow: the CLI
imports it only once a command has a valid config and work to do.
"""

from __future__ import annotations

from satsweep.benchmarks.harness import Comparison, at_most, median, seconds_of

LIMIT_SECONDS = 2.0


def startup(repeats: int) -> list[Comparison]:
    """``satsweep --help`` against a bare ``python -c pass``: the CLI's start-up cost."""
    cases = {
        "`satsweep --help`": ["--help"],
        "config error": ["train", "trainer.epochs=0"],
    }
    rows = []
    for name, command in cases.items():
        seconds = median([seconds_of(command, expected=(0, 2)) for _ in range(max(repeats, 3))])
        goal, met = at_most(seconds / LIMIT_SECONDS, 1.0)
        rows.append(
            Comparison(
                name=f"answer to {name}",
                a_label="measured",
                a=seconds,
                b_label="limit",
                b=LIMIT_SECONDS,
                unit="s",
                ratio=seconds / LIMIT_SECONDS,
                ratio_means="A/B",
                goal=goal,
                met=met,
                repeats=max(repeats, 3),
            )
        )
    return rows
