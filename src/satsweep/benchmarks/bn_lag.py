"""How far batch-norm's moving averages lag the weights, epoch by epoch.

Trains one run through :func:`satsweep.training.train` with
``trainer.precise_bn_images=0`` (Keras' moving averages, as satsweep evaluated
before the knob existed) and, after every epoch, scores validation twice: with
the moving averages, and with statistics recomputed on the current weights
(:mod:`satsweep.batchnorm`, what ``trainer.precise_bn_images`` does before each
evaluation). The moving averages are put back after each probe, so the run
trains and logs as it would without it.

Usage: ``python -m satsweep.benchmarks.bn_lag [OVERRIDE ...]``, e.g. ``sweep=quick``
for the main job's trial, or ``sweep=quick data=folder data.path=DIR`` for your own
images. The run is logged to the MLflow experiment ``bench-bn-lag``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import f1_score

from satsweep.batchnorm import Recomputer, snapshot
from satsweep.config import load_run_config
from satsweep.data import Split, load_data
from satsweep.quiet import quiet_libraries
from satsweep.training import batchnorm_sample, train

EXPERIMENT = "bench-bn-lag"
SAMPLE_IMAGES = 128  # the default trainer.precise_bn_images


def macro_f1(model: keras.Model, split: Split, batch_size: int) -> float:
    """Macro F1 of the model's arg-max predictions, without test-time augmentation."""
    predicted = model.predict(split.images, batch_size=batch_size, verbose=0).argmax(axis=1)
    return float(f1_score(split.labels, predicted, average="macro"))


@dataclass(frozen=True)
class EpochScores:
    """One epoch's validation macro F1 under the two estimates of the statistics."""

    epoch: int
    moving: float
    recomputed: float


class LagProbe(keras.callbacks.Callback):
    """After each epoch: validation scored with moving and with recomputed statistics."""

    def __init__(self, val: Split, sample: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.val, self.batch_size = val, batch_size
        self.recompute = Recomputer(sample, batch_size)
        self.scores: list[EpochScores] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Score validation twice; the second pass leaves the moving averages as they were."""
        moving = macro_f1(self.model, self.val, self.batch_size)
        restore = snapshot(self.model)
        try:
            self.recompute(self.model)
            recomputed = macro_f1(self.model, self.val, self.batch_size)
        finally:
            restore()
        self.scores.append(EpochScores(epoch + 1, moving, recomputed))


def measure(overrides: Sequence[str]) -> tuple[list[EpochScores], dict[str, float]]:
    """Train one run of ``overrides`` with the probe; its per-epoch scores and final metrics."""
    cfg = load_run_config(
        [*overrides, f"tracking.experiment={EXPERIMENT}", "trainer.precise_bn_images=0"]
    )
    dataset = load_data(cfg)
    sample = batchnorm_sample(cfg, dataset, SAMPLE_IMAGES)
    probe = LagProbe(dataset.val, sample, cfg.trainer.batch_size)
    result = train(cfg, dataset=dataset, run_name="bn-lag", callbacks=[probe])
    return probe.scores, result.metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-epoch table and the run's final scores (moving averages, with TTA)."""
    quiet_libraries()
    scores, metrics = measure(list(sys.argv[1:] if argv is None else argv))
    table = Table(title="validation macro F1 after each epoch")
    for column in ("epoch", "moving averages", "recomputed statistics"):
        table.add_column(column, justify="right")
    for row in scores:
        table.add_row(str(row.epoch), f"{row.moving:.3f}", f"{row.recomputed:.3f}")
    console = Console()
    console.print(table)
    console.print(
        f"final, moving averages and trainer.tta: val {metrics['final_val_f1_macro']:.3f}, "
        f"test {metrics['test_f1_macro']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
