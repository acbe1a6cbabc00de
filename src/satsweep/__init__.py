"""satsweep: hyper-parameter sweeps for Keras image classifiers (Hydra, Optuna, MLflow).

The command line is ``satsweep``; the same commands as Python functions::

    from satsweep import train
    result = train(["data.max_per_class=20", "trainer.epochs=1"])
"""

from satsweep.api import (
    SweepResult,
    artifact,
    compose,
    eda,
    next_round,
    reproduce,
    run_metrics,
    sweep,
    train,
)
from satsweep.errors import UserError

__all__ = [
    "SweepResult",
    "UserError",
    "artifact",
    "compose",
    "eda",
    "next_round",
    "reproduce",
    "run_metrics",
    "sweep",
    "train",
]
