"""Pruning that says why: the epoch, the value, and the threshold it fell short of.

Optuna's Keras callback raises ``TrialPruned("Trial was pruned at epoch 4.")``.
A user comparing runs in MLflow wants to know against what: for the median and
percentile pruners the threshold is the percentile of the completed trials'
values at the same epoch, which this callback recomputes for the record. A trial
pruned by less than its validation split resolves (two standard errors) is said to
be pruned to save time: its parameters were not shown to be worse, and the lessons
say so too.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from satsweep.metrics import sampling_sd
from satsweep.search.ledger import PRUNED_SHORT_ATTR
from satsweep.search.settings import PrunerSettings

PERCENTILE_PRUNERS = {"median": 50.0}  # plus "percentile", whose option says


class ExplainedPruningCallback(KerasPruningCallback):
    """Optuna's Keras pruning callback, raising with a reason fit for the run's record."""

    def __init__(
        self, trial: optuna.Trial, monitor: str, pruner: PrunerSettings, val_images: int
    ) -> None:
        super().__init__(trial, monitor)
        self.pruner = pruner
        self.val_images = val_images

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Report the epoch's objective to Optuna and prune, saying why, when the pruner says so."""
        try:
            super().on_epoch_end(epoch, logs)
        except optuna.TrialPruned:
            value = float((logs or {})[self._monitor])
            threshold = self.threshold(epoch)
            shortfall = self.within_noise(value, threshold)
            if shortfall is not None:  # the lessons call such a trial untested, not worse
                self._trial.set_user_attr(PRUNED_SHORT_ATTR, shortfall)
            raise optuna.TrialPruned(self.reason(epoch, value, threshold, shortfall)) from None

    def within_noise(self, value: float, threshold: float | None) -> dict[str, float] | None:
        """How far short of ``threshold`` the trial fell, where that is less than two
        standard errors of its validation split (``by`` and ``resolved``); else None."""
        if threshold is None:
            return None
        short_by = abs(threshold - value)
        resolved = 2 * sampling_sd(self._monitor, threshold, self.val_images)
        return {"by": short_by, "resolved": resolved} if short_by < resolved else None

    def reason(
        self,
        epoch: int,
        value: float,
        threshold: float | None,
        shortfall: dict[str, float] | None,
    ) -> str:
        """Why the pruner stopped the trial: its epoch, its value and the threshold it missed."""
        said = f"pruned by the {self.pruner.name} pruner after epoch {epoch + 1}: "
        said += f"{self._monitor}={value:.4f}"
        if threshold is None:
            return said
        said += f", short of {threshold:.4f} ({threshold_words(self.pruner)})"
        if shortfall is not None:
            said += (
                f" by {shortfall['by']:.4f}, less than the {shortfall['resolved']:.4f} that "
                f"{self.val_images} validation images resolve: pruned to save time, not shown "
                "to be worse"
            )
        return said

    def threshold(self, epoch: int) -> float | None:
        """The value the pruner compared against, where it has one."""
        if self.pruner.name == "threshold":
            maximize = self._trial.study.direction == StudyDirection.MAXIMIZE
            bound = self.pruner.options.get("lower" if maximize else "upper")
            return None if bound is None else float(bound)
        percentile = percentile_of(self.pruner)
        if percentile is None:
            return None
        study = self._trial.study
        values = [
            t.intermediate_values[epoch]
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if epoch in t.intermediate_values
        ]
        if not values:
            return None
        maximize = study.direction == StudyDirection.MAXIMIZE
        return float(np.nanpercentile(values, 100 - percentile if maximize else percentile))


def percentile_of(pruner: PrunerSettings) -> float | None:
    """The value the other trials' ``percentile`` reached at ``step``, the pruner's threshold."""
    if pruner.name == "percentile":
        return float(pruner.options["percentile"])
    return PERCENTILE_PRUNERS.get(pruner.name)


def threshold_words(pruner: PrunerSettings) -> str:
    """The pruner's rule in words, for the pruned trial's note in MLflow."""
    if pruner.name == "threshold":
        return "the pruner's bound"
    if pruner.name == "median":
        return "the median of completed trials at that epoch"
    return f"the {percentile_of(pruner):g}th percentile of completed trials at that epoch"
