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

from satsweep.search.ledger import FINAL_PROGRESS_ATTR


@dataclass(frozen=True)
class FinalFitProgress:
    """How far the final fit is: epochs done of all, and the last epoch's seconds."""

    epoch: int
    epochs: int
    epoch_seconds: float

    def left(self) -> float:
        """Seconds left at the last epoch's pace."""
        return self.epoch_seconds * max(0, self.epochs - self.epoch)


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
    final_fit: FinalFitProgress | None = None  # once the final fit has run an epoch

    def eta(self) -> str:
        """The time left at the pace so far, or ``?`` before any trial finished."""
        if self.final_fit is not None:
            return f"{self.final_fit.left():.0f}s"
        if not self.total or not self.done:
            return "?"
        left = max(0, self.total - self.done)
        return f"{self.elapsed / self.done * left:.0f}s"

    def line(self) -> str:
        """The snapshot as one line, for logs without a terminal."""
        total = self.total if self.total is not None else "?"
        final = ""
        if self.final_fit is not None:
            final = f" | final fit epoch {self.final_fit.epoch}/{self.final_fit.epochs}"
        return (
            f"trials {self.done}/{total} done, {self.running} running, {self.pruned} pruned, "
            f"{self.failed} failed{final} | best {self.best} | {self.elapsed:.0f}s elapsed, "
            f"~{self.eta()} left"
        )


def snapshot(
    study: optuna.Study, total: int | None, objective: str, started: float, final_fit: bool = False
) -> Snapshot:
    """Count the study's trials by state and find its best value, as the display shows them.

    ``final_fit``: the final fit runs, and its worker reports each epoch on the study.
    """
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
        final_fit=_final_fit_progress(study) if final_fit else None,
    )


def _final_fit_progress(study: optuna.Study) -> FinalFitProgress | None:
    record = study.user_attrs.get(FINAL_PROGRESS_ATTR)
    return FinalFitProgress(**record) if record else None


class ProgressSink(Protocol):
    """Something that shows snapshots as they come."""

    def update(self, snap: Snapshot) -> None:
        """Show ``snap``, replacing what was shown before."""


class ProgressView(Protocol):
    """Opens a display titled ``title`` for the time of a ``with`` block."""

    def __call__(self, title: str) -> AbstractContextManager[ProgressSink]: ...
