"""What every benchmark shares: A/B alternation, medians, the table and its JSON.

Each benchmark compares two ways of doing the same work in one run, on one
machine, so the ratio survives whatever else the machine is doing; repeats
alternate A and B and report medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Comparison:
    """One row of the table: A against B, and their ratio against the goal."""

    name: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str
    ratio: float  # defined per benchmark; ``ratio_means`` says how
    ratio_means: str
    goal: str  # e.g. ">= 0.95"; empty when the issue sets none
    met: bool | None
    repeats: int
    note: str = ""


def alternate(
    a: Callable[[], float], b: Callable[[], float], repeats: int
) -> tuple[list[float], list[float]]:
    """Run A and B ``repeats`` times each, in alternating order (AB, BA, AB, ...)."""
    a_values, b_values = [], []
    for index in range(repeats):
        if index % 2 == 0:
            a_values.append(a())
            b_values.append(b())
        else:
            b_values.append(b())
            a_values.append(a())
    return a_values, b_values


def rate_comparison(
    name: str,
    a: tuple[str, Callable[[], float]],
    b: tuple[str, Callable[[], float]],
    goal: float,
    repeats: int,
    note: str,
) -> Comparison:
    """Two rates (images/s) of the same work: A/B of their medians against ``goal``.

    Each side runs once before timing, so that graph tracing and first-pass
    caches are paid outside the repeats.
    """
    (a_label, a_rate), (b_label, b_rate) = a, b
    a_rate(), b_rate()
    a_values, b_values = alternate(a_rate, b_rate, repeats)
    ratio = median(a_values) / median(b_values)
    goal_text, met = at_least(ratio, goal)
    return Comparison(
        name=name,
        a_label=a_label,
        a=median(a_values),
        b_label=b_label,
        b=median(b_values),
        unit="images/s",
        ratio=ratio,
        ratio_means="A/B",
        goal=goal_text,
        met=met,
        repeats=repeats,
        note=note,
    )


def median(values: Sequence[float]) -> float:
    """The median of repeats: one slow outlier on a busy machine does not move it."""
    return float(statistics.median(values))


def seconds_of(
    command: Sequence[str], env: dict[str, str] | None = None, expected: Sequence[int] = (0,)
) -> float:
    """Wall time of a ``satsweep`` command run as users run it (a new process)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "satsweep", *command],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    seconds = time.perf_counter() - started
    if result.returncode not in expected:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"satsweep {' '.join(command)} exited {result.returncode}: {tail}")
    return seconds


def at_least(ratio: float, goal: float) -> tuple[str, bool]:
    """The goal ``ratio >= goal`` and whether the ratio meets it."""
    return f">= {goal:g}", ratio >= goal


def at_most(ratio: float, goal: float) -> tuple[str, bool]:
    """The goal ``ratio <= goal`` and whether the ratio meets it."""
    return f"<= {goal:g}", ratio <= goal


def machine() -> dict[str, str]:
    """The machine the figures were measured on, recorded with them."""
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpu_count": str(os.cpu_count()),
        "processor": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(rows: Sequence[Comparison], title: str) -> Table:
    """The comparisons as a rich table."""
    shown = Table(title=title)
    for column in ("benchmark", "A", "B", "ratio", "goal", "met", "n"):
        shown.add_column(column, justify="left" if column == "benchmark" else "right")
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        shown.add_row(
            row.name,
            f"{row.a_label}: {row.a:.4g} {row.unit}",
            f"{row.b_label}: {row.b:.4g} {row.unit}",
            f"{row.ratio:.3g} ({row.ratio_means})",
            row.goal or "-",
            met,
            str(row.repeats),
        )
    return shown


def write(rows: Sequence[Comparison], folder: Path, seconds: float) -> Path:
    """``bench-DATE.json`` and ``latest.json`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine(), "seconds": seconds, "rows": [asdict(r) for r in rows]}
    path = folder / f"bench-{datetime.now():%Y%m%d-%H%M%S}.json"
    text = json.dumps(record, indent=2)
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    return path


def save_record(folder: Path, stem: str, record: dict[str, Any]) -> Path:
    """``STEM-DATE.json`` and ``STEM-latest.json`` under ``folder``, the machine included."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"machine": machine(), **record}, indent=2)
    (folder / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}.json").write_text(text)
    latest = folder / f"{stem}-latest.json"
    latest.write_text(text)
    print(f"wrote {latest}")
    return latest


def print_rows(rows: Sequence[Comparison], title: str) -> None:
    """Print the comparisons as a table titled ``title``."""
    console = Console(width=max(160, Console().width))
    console.print(table(rows, title))
    for row in rows:
        if row.note:
            console.print(f"[dim]{row.name}: {row.note}[/dim]")
