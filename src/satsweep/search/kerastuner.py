"""The KerasTuner backend: a KerasTuner oracle proposes, satsweep trains and logs.

KerasTuner's oracles (random search, Bayesian optimisation, Hyperband) choose each
trial's parameters and, for Hyperband, its epochs and the earlier round it
continues. Everything else is the Optuna backend's path: the proposal is enqueued
in the sweep's Optuna study and run by the same :class:`TrialObjective`, so the
trial composes its config through Hydra, trains through ``fit_and_log`` and
becomes a child MLflow run like any other. The study is satsweep's ledger of
trials whatever the backend, so progress, leaderboards, plots, ``compare`` and
``reproduce --study`` work unchanged.

KerasTuner keeps its own state in ``outputs/kerastuner/STUDY``: a rerun reloads it
(``overwrite=False``) and retries the trial that was running when it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import optuna
from keras_tuner.engine.base_tuner import BaseTuner
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from satsweep.errors import UserError
from satsweep.runtime import settle_between_runs
from satsweep.search.attach import Budget
from satsweep.search.job import SweepJob
from satsweep.search.ledger import RUN_ATTR
from satsweep.search.objective import LastTrial, TrialObjective, TrialPlan, too_many_failures
from satsweep.search.settings import SweepSettings
from satsweep.search.space import Distribution, SearchSpace

LOG = logging.getLogger(__name__)
TRIAL_ATTR = "kerastuner_trial_id"
TAG = "satsweep.kerastuner."
WEIGHTS_FILE = "final.weights.h5"
CONSECUTIVE_FAILURES = "Number of consecutive failures exceeded"
ORACLES: dict[str, type[keras_tuner.Oracle]] = {
    "random": keras_tuner.oracles.RandomSearchOracle,
    "bayesian": keras_tuner.oracles.BayesianOptimizationOracle,
    "hyperband": keras_tuner.oracles.HyperbandOracle,
}


def declare(space: SearchSpace, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """Register the space on ``hp``; returns the values active in it.

    A conditional dimension is declared inside KerasTuner's conditional scope of
    its group choice, so the oracle knows it is inactive (and proposes nothing for
    it) when the choice differs, as Optuna's define-by-run space does.
    """
    active = {}
    for dimension in space.dimensions:
        if dimension.condition is None:
            value = _register(hp, dimension.key, dimension.distribution)
        else:
            group, option = dimension.condition
            parent_value = space.dimension(group).value_of(option)
            with hp.conditional_scope(group, [parent_value]):
                value = _register(hp, dimension.key, dimension.distribution)
        if value is not None:
            active[dimension.key] = value
    return active


def _register(hp: keras_tuner.HyperParameters, key: str, distribution: Distribution) -> Any:
    if isinstance(distribution, CategoricalDistribution):
        value = hp.Choice(key, list(distribution.choices))
        # KerasTuner stores bools as ints: hand back the sweep file's own value.
        choices = distribution.choices
        return None if value is None else choices[choices.index(value)]
    sampling = "log" if distribution.log else "linear"
    step = None if distribution.log else distribution.step
    if isinstance(distribution, IntDistribution):
        return hp.Int(key, distribution.low, distribution.high, step=step, sampling=sampling)
    return hp.Float(key, distribution.low, distribution.high, step=step, sampling=sampling)


class SpaceModel(keras_tuner.HyperModel):
    """Declares the sweep's space to KerasTuner; satsweep builds the model itself."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(name="satsweep_space")
        self.space = space

    def build(self, hp: keras_tuner.HyperParameters) -> None:
        """KerasTuner's hook: declare the space's hyper-parameters (the trial builds the model)."""
        declare(self.space, hp)


class WarmStart(keras.callbacks.Callback):
    """A Hyperband round continues from the weights its trial's earlier round ended with."""

    def __init__(self, weights: Path) -> None:
        super().__init__()
        self.weights = weights

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Continue from the weights of the Hyperband round this trial extends."""
        self.model.load_weights(self.weights)


class SaveFinalWeights(keras.callbacks.Callback):
    """Keeps a trial's final weights where a later Hyperband round will look for them."""

    def __init__(self, weights: Path) -> None:
        super().__init__()
        self.weights = weights

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Keep the weights for the next Hyperband round, which continues this trial."""
        self.model.save_weights(self.weights)


class BudgetSpent(Exception):
    """``sweep.timeout`` has passed: start no new trial."""


class Recycle(Exception):
    """``sweep.trials_per_process`` trials ran: the worker re-executes itself."""


class SweepTuner(BaseTuner):
    """A KerasTuner tuner whose trials are satsweep trials (see the module docstring)."""

    def __init__(
        self,
        job: SweepJob,
        study: optuna.Study,
        objective: TrialObjective,
        budget: Budget,
    ) -> None:
        self.job, self.study, self.objective, self.budget = job, study, objective, budget
        self.trials_run = 0
        self.last_trial = LastTrial()  # the latest trial, for the too-many-failures message
        super().__init__(
            oracle=build_oracle(job.settings),
            hypermodel=SpaceModel(job.space),
            directory=str(Path(job.base.paths.outputs) / "kerastuner"),
            project_name=job.settings.study_name,
            overwrite=False,
        )
        self.oracle.max_trials = job.settings.n_trials  # Hyperband's oracle takes no max_trials
        self.oracle.verbose = 0  # satsweep reports trials itself

    def pre_create_trial(self) -> None:
        """Stop asking the oracle once a stop, the timeout or ``trials_per_process`` says so."""
        self.objective.stop.check()
        if self.budget.expired():
            raise BudgetSpent
        limit = self.job.settings.trials_per_process
        if limit and self.trials_run >= limit:
            raise Recycle

    def run_trial(self, trial: keras_tuner.engine.trial.Trial) -> float:
        """Run the proposal as the study's next trial; KerasTuner gets its objective value."""
        values = trial.hyperparameters.values
        settle_between_runs()  # as the Optuna worker does: each trial collects only its own
        self.study.enqueue_trial(
            declare(self.job.space, trial.hyperparameters.copy()),
            user_attrs={TRIAL_ATTR: trial.trial_id},
        )
        self.trials_run += 1
        ended = LastTrial()
        self.study.optimize(
            self.objective.for_trial(self._plan(trial.trial_id, values), on_start=_nothing),
            n_trials=1,
            catch=(Exception,),
            callbacks=[ended, self.last_trial],
            gc_after_trial=False,  # settle_between_runs, before each trial, collects
        )
        if ended.trial is None or ended.trial.state != TrialState.COMPLETE:
            raise keras_tuner.errors.FailedTrialError(ended.error or "pruned")
        return ended.trial.values[0]

    def _plan(self, trial_id: str, values: dict[str, Any]) -> TrialPlan:
        """Hyperband's epochs and warm start; the plain tuners train as configured."""
        if "tuner/epochs" not in values:
            return TrialPlan(tags={f"{TAG}trial_id": trial_id})
        continues = values.get("tuner/trial_id")
        weights = Path(self.get_trial_dir(trial_id)) / WEIGHTS_FILE
        callbacks: list[keras.callbacks.Callback] = [SaveFinalWeights(weights)]
        tags = {
            f"{TAG}trial_id": trial_id,
            f"{TAG}bracket": str(values["tuner/bracket"]),
            f"{TAG}round": str(values["tuner/round"]),
        }
        if continues:
            callbacks.insert(0, WarmStart(Path(self.get_trial_dir(continues)) / WEIGHTS_FILE))
            tags[f"{TAG}continues_trial"] = str(continues)
            tags[f"{TAG}continues_run"] = self._run_of(str(continues))
        return TrialPlan(
            overrides=(f"trainer.epochs={values['tuner/epochs']}",),
            callbacks=tuple(callbacks),
            initial_epoch=int(values["tuner/initial_epoch"]) if continues else 0,
            tags=tags,
        )

    def _run_of(self, trial_id: str) -> str:
        """The MLflow run of the KerasTuner trial ``trial_id`` (the last one to run it)."""
        runs = [
            str(t.user_attrs.get(RUN_ATTR, ""))
            for t in self.study.get_trials(deepcopy=False)
            if t.user_attrs.get(TRIAL_ATTR) == trial_id
        ]
        return runs[-1] if runs else ""


def build_oracle(settings: SweepSettings) -> keras_tuner.Oracle:
    """The KerasTuner oracle of ``sweep.kerastuner``; bad options are one-line user errors."""
    tuner = settings.kerastuner
    direction = "max" if settings.directions[0] == "maximize" else "min"
    arguments: dict[str, Any] = {
        "objective": keras_tuner.Objective(settings.objectives[0], direction),
        "seed": tuner.seed,
        "max_consecutive_failed_trials": settings.max_failures,
        **tuner.options,
    }
    if tuner.tuner == "hyperband":
        arguments.update(max_epochs=tuner.max_epochs, factor=tuner.factor)
        arguments.setdefault("hyperband_iterations", None)  # until n_trials or the timeout
    else:
        arguments["max_trials"] = settings.n_trials
    try:
        return ORACLES[tuner.tuner](**arguments)
    except (TypeError, ValueError) as error:
        raise UserError(
            f"bad sweep.kerastuner.options for the {tuner.tuner} oracle: {error}"
        ) from error


def run_kerastuner(
    job: SweepJob, study: optuna.Study, objective: TrialObjective, budget: Budget
) -> tuple[int, bool]:
    """Search until the oracle is done, the timeout, or ``trials_per_process``.

    Returns the trials run and whether the worker should re-execute itself.
    """
    settings = job.settings
    tuner = SweepTuner(job, study, objective, budget)
    try:
        tuner.search()
    except BudgetSpent:
        LOG.info("sweep.timeout of %gs reached: no new trial", settings.timeout)
    except Recycle:
        return tuner.trials_run, True
    except RuntimeError as error:
        if CONSECUTIVE_FAILURES not in str(error):
            raise
        last_error = tuner.last_trial.error or str(error).strip().splitlines()[-1]
        raise too_many_failures(settings.max_failures, last_error) from error
    return tuner.trials_run, False


def _nothing() -> None:
    """KerasTuner's worker is alone on its study: it holds no budget lock to release."""
