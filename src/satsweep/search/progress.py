"""Live sweep progress: a rich panel on a terminal, plain lines in CI logs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int | None
    running: int
    pruned: int
    failed: int
    best: str
    elapsed: float

    def eta(self) -> str:
        if not self.total or not self.done:
            return "?"
        left = max(0, self.total - self.done)
        return f"{self.elapsed / self.done * left:.0f}s"

    def line(self) -> str:
        total = self.total if self.total is not None else "?"
        return (
            f"trials {self.done}/{total} done, {self.running} running, {self.pruned} pruned, "
            f"{self.failed} failed | best {self.best} | {self.elapsed:.0f}s elapsed, "
            f"~{self.eta()} left"
        )


def snapshot(study: optuna.Study, total: int | None, objective: str, started: float) -> Snapshot:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = "-"
    if complete:
        reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        top = sorted(complete, key=lambda t: t.values[0], reverse=reverse)[0]
        best = f"{objective}={top.values[0]:.4f} (trial {top.number})"
    return Snapshot(
        done=states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED),
        total=total,
        running=states.count(TrialState.RUNNING),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        best=best,
        elapsed=time.monotonic() - started,
    )


def _panel(snap: Snapshot, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    total = snap.total if snap.total is not None else "?"
    if snap.total:
        table.add_row("progress", ProgressBar(total=snap.total, completed=snap.done, width=30))
    for label, value in (
        ("trials done", f"{snap.done}/{total}"),
        ("running", snap.running),
        ("pruned", snap.pruned),
        ("failed", snap.failed),
        ("best", snap.best),
        ("elapsed", f"{snap.elapsed:.0f}s"),
        ("remaining", f"~{snap.eta()}"),
    ):
        table.add_row(label, str(value))
    return table


class Progress:
    """Call :meth:`update` periodically; redraws on a terminal, prints on change elsewhere."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.title = title
        self.live: Live | None = None
        self.last_line = ""

    def __enter__(self) -> Progress:
        if self.console.is_terminal or self.console.is_jupyter:  # a notebook redraws too
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def update(self, snap: Snapshot) -> None:
        if self.live is not None:
            self.live.update(_panel(snap, self.title))
            return
        line = snap.line()
        if line.split(" | ")[:2] != self.last_line.split(" | ")[:2]:
            print(f"{self.title}: {line}", file=self.console.file, flush=True)
        self.last_line = line

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
