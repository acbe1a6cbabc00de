"""Choose a pruner on recorded learning curves, without a sweep per candidate.

A sweep run without pruning keeps every trial's objective after every epoch in
its MLflow runs. Optuna's pruners only ever see those values, so replaying them
through a fresh in-memory study, epoch by epoch, shows where each candidate
would have stopped each trial: the epochs it saves, and which trial it leaves on
top. Random orders of the trials average out which trials happened to come
first. The test score of the trial left on top is reported beside the best val
score: the best of more noisy val scores is also luckier, so the val loss alone
overstates what pruning costs.

Usage: ``python -m satsweep.benchmarks.pruners OUTPUTS:STUDY [...] [--trials 8]
[--orders 60] [--objective val_f1_macro]``, where each ``OUTPUTS`` folder holds
an unpruned sweep's study and MLflow store at satsweep's default paths, e.g.
``satsweep sweep sweep=quick sweep.pruner.name=none sweep.n_trials=12
sweep.final_fit.enabled=false paths.outputs=OUTPUTS``.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import optuna
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from satsweep.config import load_environment
from satsweep.search.ledger import load_study, trial_run_id
from satsweep.search.settings import test_metric
from satsweep.search.storage import open_storage
from satsweep.search.study import PRUNERS
from satsweep.tracking import Tracker

OUTSIDE_EPOCHS = 0.12  # a trial's cost outside its epochs, as a fraction of a full trial
CANDIDATES: dict[str, tuple[str, dict[str, int]]] = {  # label: (sweep.pruner.name, options)
    "median, 3 start-up trials, 5 warm-up epochs": (
        "median",
        {"n_startup_trials": 3, "n_warmup_steps": 5},
    ),
    "median, 2 and 1": ("median", {"n_startup_trials": 2, "n_warmup_steps": 1}),
    "median, 2 and 0": ("median", {"n_startup_trials": 2, "n_warmup_steps": 0}),
    "median, 2 and 2": ("median", {"n_startup_trials": 2, "n_warmup_steps": 2}),
    "median, 3 and 1": ("median", {"n_startup_trials": 3, "n_warmup_steps": 1}),
    "median, 4 and 1": ("median", {"n_startup_trials": 4, "n_warmup_steps": 1}),
    "percentile 25, 2 and 1": (
        "percentile",
        {"percentile": 25, "n_startup_trials": 2, "n_warmup_steps": 1},
    ),
    "percentile 25, 2 and 2": (
        "percentile",
        {"percentile": 25, "n_startup_trials": 2, "n_warmup_steps": 2},
    ),
    "successive halving, 1 epoch, factor 3": (
        "successive_halving",
        {"min_resource": 1, "reduction_factor": 3},
    ),
    "hyperband, 1 to 10 epochs, factor 3": (
        "hyperband",
        {"min_resource": 1, "max_resource": 10, "reduction_factor": 3},
    ),
}


@dataclass(frozen=True)
class Curve:
    """One finished, unpruned trial: its objective after each epoch, its final scores."""

    values: tuple[float, ...]
    final: float  # the trial's objective (evaluated once after training)
    test: float  # the same trial's test score


@dataclass(frozen=True)
class Replay:
    """What a pruner did to one ordered list of trials."""

    cost: float  # the time spent, as a fraction of running every trial to the end
    best: float  # the best final objective among the trials it let finish
    test_of_best: float  # that trial's test score
    pruned: int


def replay(curves: Sequence[Curve], pruner: BasePruner) -> Replay:
    """Tell ``curves`` to a fresh study in order, epoch by epoch; prune where ``pruner`` says."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    cost, finished = 0.0, []
    for curve in curves:
        trial = study.ask()
        epochs = len(curve.values)
        for step, value in enumerate(curve.values):
            trial.report(value, step)
            if trial.should_prune():
                epochs = step + 1
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, curve.final)
            finished.append(curve)
        cost += OUTSIDE_EPOCHS + (1 - OUTSIDE_EPOCHS) * epochs / len(curve.values)
    top = max(finished, key=lambda c: c.final)
    return Replay(cost / len(curves), top.final, top.test, len(curves) - len(finished))


@dataclass(frozen=True)
class Verdict:
    """A pruner's means over random orders of one study's trials."""

    cost: float
    best_lost: float  # best val objective without pruning minus with it
    test_lost: float  # the same for the test score of the trial left on top


def judge(
    curves: Sequence[Curve], make: Callable[[], BasePruner], trials: int, orders: int, seed: int
) -> Verdict:
    """Replay ``orders`` random draws of ``trials`` of the curves, in random order."""
    rng = random.Random(seed)
    costs, lost, test_lost = [], [], []
    for _ in range(orders):
        drawn = rng.sample(list(curves), min(trials, len(curves)))
        result = replay(drawn, make())
        unpruned = max(drawn, key=lambda c: c.final)
        costs.append(result.cost)
        lost.append(unpruned.final - result.best)
        test_lost.append(unpruned.test - result.test_of_best)
    return Verdict(statistics.mean(costs), statistics.mean(lost), statistics.mean(test_lost))


def recorded_curves(outputs: str, study_name: str, objective: str) -> list[Curve]:
    """The complete trials of an unpruned sweep, with their per-epoch ``objective`` from MLflow."""
    env = load_environment([f"paths.outputs={outputs}"])
    study = load_study(open_storage(env.storage), study_name, env.storage.url)
    client = Tracker(env.tracking).client
    curves = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial_run_id(study, trial)
        history = sorted(client.get_metric_history(run_id, objective), key=lambda m: m.step)
        # get_run would answer from the first store a process opened; the history reads this one
        test = client.get_metric_history(run_id, test_metric(objective))[-1].value
        curves.append(Curve(tuple(m.value for m in history), float(trial.values[0]), test))
    return curves


def main() -> None:
    """Print each candidate's mean time, best val lost and test lost, per study."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("studies", nargs="+", metavar="OUTPUTS:STUDY")
    parser.add_argument("--trials", type=int, default=8, help="trials per replayed sweep")
    parser.add_argument("--orders", type=int, default=60, help="random orders per study")
    parser.add_argument("--objective", default="val_f1_macro", help="the sweeps' objective")
    options = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = []
    for spec in options.studies:
        outputs, study_name = spec.rsplit(":", 1)
        studies.append(recorded_curves(outputs, study_name, options.objective))
    for label, (name, settings) in CANDIDATES.items():
        make = partial(PRUNERS[name], **settings)
        verdicts = [
            judge(curves, make, options.trials, options.orders, seed)
            for seed, curves in enumerate(studies)
        ]
        print(
            f"{label}: time "
            + " / ".join(f"{v.cost:.2f}" for v in verdicts)
            + "; best val lost "
            + " / ".join(f"{v.best_lost:.3f}" for v in verdicts)
            + "; test of the picked trial lost "
            + " / ".join(f"{v.test_lost:+.3f}" for v in verdicts)
        )


if __name__ == "__main__":
    main()
