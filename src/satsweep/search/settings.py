"""The typed ``sweep`` node of a sweep file (``sweeps/NAME.yaml``).

A sweep file is a Hydra config with ``# @package _global_``: its top-level keys
fix the base experiment (data, trainer, ...) and its ``sweep`` node holds the
study settings and the search space, written in Hydra's override grammar.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from satsweep.metrics import EPOCH_METRICS
from satsweep.schema import SafeName, Seed, Strict

Direction = Literal["maximize", "minimize"]


def result_metric(objective: str) -> str:
    """The metric a run logs for ``objective`` once trained.

    ``val_*`` names are Keras' per-epoch curves, which pruners watch; the value
    after training (and TTA) is logged as ``final_val_*``, and only by runs that
    finished, so sorting on it in the MLflow UI puts finished trials first.
    """
    return f"final_{objective}" if objective.startswith("val_") else objective


def test_metric(objective: str) -> str:
    """The test-split counterpart of a ``val_*`` objective: how the model does unseen."""
    return "test_" + objective.removeprefix("val_") if objective.startswith("val_") else objective


def check_worker_count(backend: str, workers: int | None) -> None:
    """KerasTuner's own parallel mode needs a chief oracle over gRPC: satsweep runs it alone.

    ``workers`` is None for a worker that joins a study by hand (``satsweep worker``).
    """
    if workers is None and backend == "kerastuner":
        raise ValueError(
            "sweep.backend=kerastuner runs in the one worker `satsweep sweep` starts: "
            "workers join Optuna sweeps only"
        )
    if workers is None:
        return
    if workers < 1:
        raise ValueError(f"--workers {workers} starts no worker: give 1 or more")
    if backend == "kerastuner" and workers > 1:
        raise ValueError(
            f"sweep.backend=kerastuner runs one worker, not {workers}: "
            "set sweep.workers=1 (or --workers 1), or use sweep.backend=optuna"
        )


class SamplerSettings(Strict):
    """The Optuna sampler that proposes trials (``sweep.sampler``)."""

    name: Literal["tpe", "random", "grid", "cmaes", "qmc", "nsga2"]
    seed: Seed | None
    options: dict[str, Any]  # passed to the Optuna sampler's constructor


class PrunerSettings(Strict):
    """The Optuna pruner that stops hopeless trials early (``sweep.pruner``)."""

    name: Literal["median", "percentile", "successive_halving", "hyperband", "threshold", "none"]
    options: dict[str, Any]  # passed to the Optuna pruner's constructor


class KerasTunerSettings(Strict):
    """The KerasTuner tuner that proposes trials when ``sweep.backend=kerastuner``."""

    tuner: Literal["random", "bayesian", "hyperband"]
    max_epochs: Annotated[int, Field(gt=0)]  # Hyperband's largest number of epochs per trial
    factor: Annotated[int, Field(ge=2)]  # Hyperband's reduction factor between rounds
    seed: Seed | None
    options: dict[str, Any]  # keyword arguments of the KerasTuner oracle


class FinalFitSettings(Strict):
    """The sweep's answer: its best configuration retrained once with the full budget."""

    enabled: bool
    overrides: list[str]  # Hydra overrides on top of the best trial's, e.g. trainer.epochs=20


class NoiseSettings(Strict):
    """The seed-to-seed spread of the objective, measured after the search."""

    repeats: Annotated[int, Field(ge=0, le=20)]  # other seeds for the best trial; 0 = off


class SweepSettings(Strict):
    """The ``sweep`` node of a sweep file: the study, its budget, backend and search space."""

    study_name: SafeName  # also a folder name (outputs/sweeps/NAME)
    previous: SafeName | None  # the study this round follows (satsweep next writes it)
    experiment: SafeName  # the MLflow experiment of the sweep's runs
    objectives: Annotated[list[str], Field(min_length=1, max_length=3)]
    directions: Annotated[list[Direction], Field(min_length=1, max_length=3)]
    n_trials: Annotated[int, Field(gt=0)] | None
    timeout: Annotated[float, Field(gt=0)] | None
    workers: Annotated[int, Field(gt=0, le=64)]
    max_failures: Annotated[int, Field(gt=0)]
    trials_per_process: Annotated[int, Field(gt=0)] | None
    backend: Literal["optuna", "kerastuner"]
    sampler: SamplerSettings
    pruner: PrunerSettings
    kerastuner: KerasTunerSettings
    params: dict[str, str | None]  # null: not searched (a later round fixed the key)
    conditional: dict[str, dict[str, str]]
    final_fit: FinalFitSettings
    noise: NoiseSettings
    # figures and model for every trial; or a model for those that lead when they finish,
    # and figures for the best trial alone, drawn when the sweep ends
    trial_artifacts: Literal["all", "leading"]
    compare: dict[str, Any]  # the backend race's settings: satsweep.benchmarks.backends

    @model_validator(mode="after")
    def _consistent(self) -> SweepSettings:
        if len(self.objectives) != len(self.directions):
            raise ValueError(
                f"{len(self.objectives)} objective(s) but {len(self.directions)} direction(s): "
                "give one direction (maximize or minimize) per objective"
            )
        if self.noise.repeats and len(self.objectives) > 1:
            raise ValueError(
                "sweep.noise.repeats measures one objective's noise: set it to 0 for a "
                f"study of {len(self.objectives)} objectives"
            )
        if self.n_trials is None and self.timeout is None:
            raise ValueError("set sweep.n_trials or sweep.timeout, or the sweep never ends")
        if self.backend == "kerastuner":
            self._check_kerastuner()
        else:
            self._check_optuna()
        return self

    def _check_optuna(self) -> None:
        if len(self.objectives) > 1 and self.pruner.name != "none":
            raise ValueError(
                "Optuna prunes single-objective studies only: set sweep.pruner.name=none"
            )
        if self.pruner.name != "none" and self.objectives[0] not in EPOCH_METRICS:
            raise ValueError(
                f"the pruner needs a per-epoch objective ({', '.join(EPOCH_METRICS)}), "
                f"not {self.objectives[0]}: change sweep.objectives or set sweep.pruner.name=none"
            )
        if self.sampler.name == "nsga2" and len(self.objectives) < 2:
            raise ValueError("sweep.sampler.name=nsga2 is for 2 or more objectives: use tpe")

    def _check_kerastuner(self) -> None:
        if len(self.objectives) > 1:
            raise ValueError(
                f"KerasTuner optimises one objective, not {len(self.objectives)}: "
                "keep one in sweep.objectives or use sweep.backend=optuna"
            )
        check_worker_count(self.backend, self.workers)

    @property
    def is_multi_objective(self) -> bool:
        """Several objectives: the study keeps a Pareto front, not one best trial."""
        return len(self.objectives) > 1

    @property
    def prunes(self) -> bool:
        """Whether an Optuna pruner watches the epochs (KerasTuner's Hyperband does its own)."""
        return self.backend == "optuna" and self.pruner.name != "none"
