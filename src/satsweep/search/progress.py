"""A sweep's progress, read from its study: what any display of it shows.

The launcher takes a :class:`ProgressView` from its caller (the CLI's rich
panel, a notebook's, or none), so the engine knows nothing of terminals.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.trial import TrialState


@dataclass(frozen=True)
class Snapshot:
    """The study's trials counted by state, its best value so far, and the time."""

    done: int
    total: int | None
    running: int
    pruned: int
    failed: int
    best: str
    elapsed: float

    def eta(self) -> str:
        """The time left at the pace so far, or ``?`` before any trial finished."""
        if not self.total or not self.done:
            return "?"
        left = max(0, self.total - self.done)
        return f"{self.elapsed / self.done * left:.0f}s"

    def line(self) -> str:
        """The snapshot as one line, for logs without a terminal."""
        total = self.total if self.total is not None else "?"
        return (
            f"trials {self.done}/{total} done, {self.running} running, {self.pruned} pruned, "
            f"{self.failed} failed | best {self.best} | {self.elapsed:.0f}s elapsed, "
            f"~{self.eta()} left"
        )


def snapshot(study: optuna.Study, total: int | None, objective: str, started: float) -> Snapshot:
    """Count the study's trials by state and find its best value, as the display shows them."""
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


class ProgressSink(Protocol):
    """Something that shows snapshots as they come."""

    def update(self, snap: Snapshot) -> None:
        """Show ``snap``, replacing what was shown before."""


class ProgressView(Protocol):
    """Opens a display titled ``title`` for the time of a ``with`` block."""

    def __call__(self, title: str) -> AbstractContextManager[ProgressSink]: ...
