"""Terminal summaries of runs, printed with rich."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from satsweep.train import TrainResult


def print_train_summary(result: TrainResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{len(result.class_names)} classes, {result.epochs_run} epochs, "
                        f"{result.seconds:.1f}s")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(result.metrics.items()):
        if name.startswith(("val_", "test_")):
            table.add_row(name, f"{value:.4f}")
    console.print(table)
    console.print(f"MLflow run id: {result.run_id}")
