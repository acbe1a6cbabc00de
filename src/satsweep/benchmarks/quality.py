"""``make bench-quality``: what the default sweep finds, against the floor and the old recipe.

Usage: ``python -m satsweep.benchmarks.quality [OVERRIDE ...]``. Each row is measured
in this one run, on AID through the quick sweep's data (30 classes, 32 px):

- the no-learning floor (colour statistics + logistic regression);
- the recipe satsweep shipped before (``+experiment=aid_legacy_recipe``: a VGG-style
  CNN with Keras' default batch-norm momentum, Adam at a constant rate, 8 epochs);
- one run of today's default recipe on the same data (ResNet, AdamW with warm-up and
  cosine decay, label smoothing, shifts, flip TTA; 10 epochs);
- the default sweep (``make sweep``): its final model's test metrics and its wall time.

The table goes to the terminal and, as JSON, to ``outputs/bench/quality-latest.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from rich.console import Console
from rich.table import Table

from satsweep.baseline import no_learning_floor
from satsweep.benchmarks.harness import save_record, seconds_of
from satsweep.config import load_environment, load_run_config
from satsweep.data import load_data
from satsweep.search.ledger import FinalFit

QUICK_DATA = ["data=aid", "data.image_size=32", "data.max_per_class=100"]


@dataclass(frozen=True)
class QualityRow:
    """One way of getting a model: its test and val macro F1, and the wall time it took."""

    name: str
    test_f1_macro: float
    val_f1_macro: float
    seconds: float
    note: str


def floor_row(overrides: list[str]) -> QualityRow:
    """The no-learning floor: what a model must beat to have learnt anything."""
    started = time.perf_counter()
    dataset = load_data(load_run_config([*QUICK_DATA, *overrides]))
    floor = no_learning_floor(dataset)
    return QualityRow(
        "no-learning floor",
        floor.metrics["test_f1_macro"],
        floor.metrics["val_f1_macro"],
        time.perf_counter() - started,
        f"{floor.method}, {len(dataset.train)} training images",
    )


def train_row(name: str, command: list[str], outputs: Path, note: str) -> QualityRow:
    """One training run's test and validation macro F1, and its wall time."""
    seconds = seconds_of(["train", *command, "tracking.log_model=false"])
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("satsweep")
    assert experiment is not None
    latest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    metrics = latest.data.metrics
    return QualityRow(name, metrics["test_f1_macro"], metrics["final_val_f1_macro"], seconds, note)


def sweep_row(overrides: list[str], outputs: Path) -> QualityRow:
    """``make sweep``'s answer: its final model's test macro F1, and the sweep's wall time."""
    seconds = seconds_of(["sweep", "sweep=quick", *overrides])
    storage = JournalStorage(JournalFileBackend(str(outputs / "optuna.journal")))
    study = optuna.load_study(study_name="quick", storage=storage)
    final = FinalFit.of(study)
    if final is None:
        raise RuntimeError("the quick sweep left no final model")
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return QualityRow(
        "default sweep (make sweep): final model",
        final.metrics["test_f1_macro"],
        final.metrics["final_val_f1_macro"],
        seconds,
        f"{len(study.trials)} trials ({pruned} pruned), then trial {final.trial} retrained "
        "on all of AID; the time is the whole sweep",
    )


def main() -> None:
    """``make bench-quality``: the floor, the old recipe, the new one and the quick sweep."""
    overrides = sys.argv[1:]
    outputs_root = Path(load_environment(overrides).paths.outputs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="satsweep-quality-") as folder:
        outputs = Path(folder)
        os.environ["SATSWEEP_OUTPUTS"] = str(outputs)  # a fresh store and study
        cache = [f"paths.cache={outputs_root / 'cache'}", *overrides]
        rows = [
            floor_row(cache),
            train_row(
                "old recipe (aid_legacy_recipe)",
                ["+experiment=aid_legacy_recipe", *cache],
                outputs,
                "VGG-style CNN, BN momentum 0.99, Adam at a constant 1e-3, 8 epochs",
            ),
            train_row(
                "new recipe, one run on the same data",
                [*QUICK_DATA, "trainer=quick", *cache],
                outputs,
                "ResNet, AdamW + warm-up + cosine, label smoothing, shifts, flip TTA, 10 epochs",
            ),
            sweep_row(cache, outputs),
        ]
    seconds = time.perf_counter() - started
    _print(rows, seconds)
    rows_record = [asdict(r) for r in rows]
    save_record(outputs_root / "bench", "quality", {"seconds": seconds, "rows": rows_record})


def _print(rows: list[QualityRow], seconds: float) -> None:
    table = Table(title=f"satsweep model quality on AID ({seconds / 60:.1f} min)")
    for column in ("method", "test macro F1", "val macro F1", "wall time", "what"):
        table.add_column(column, justify="left" if column in ("method", "what") else "right")
    for row in rows:
        table.add_row(
            row.name,
            f"{row.test_f1_macro:.3f}",
            f"{row.val_f1_macro:.3f}",
            f"{row.seconds:.0f} s",
            row.note,
        )
    Console(width=max(160, Console().width)).print(table)


if __name__ == "__main__":
    main()
