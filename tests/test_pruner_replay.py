"""The pruning study: Optuna's real pruners replayed on learning curves.

Reading curves back from a real sweep's records is checked in tests/test_sweep.py
(`test_conditional_parameters_never_reach_other_choices`), which runs that sweep anyway.
"""

from __future__ import annotations

import pytest
from optuna.pruners import MedianPruner, NopPruner

from satsweep.benchmarks.pruners import OUTSIDE_EPOCHS, Curve, judge, replay

STRONG = Curve((0.3, 0.5, 0.6), final=0.62, test=0.60)
WEAK = Curve((0.1, 0.2, 0.3), final=0.31, test=0.35)
SLOW_STARTER = Curve((0.05, 0.4, 0.8), final=0.81, test=0.79)  # behind at first, best at the end


def test_without_a_pruner_every_trial_runs_to_the_end() -> None:
    result = replay([STRONG, WEAK, SLOW_STARTER], NopPruner())
    assert result.cost == pytest.approx(1.0)
    assert (result.best, result.test_of_best, result.pruned) == (0.81, 0.79, 0)


def test_a_trial_below_the_median_stops_at_its_first_epoch_and_costs_a_third() -> None:
    result = replay([STRONG, WEAK], MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    assert result.pruned == 1 and result.best == STRONG.final
    weak_cost = OUTSIDE_EPOCHS + (1 - OUTSIDE_EPOCHS) / 3
    assert result.cost == pytest.approx((1 + weak_cost) / 2)


def test_pruning_a_slow_starter_loses_the_best_trial_and_its_test_score() -> None:
    curves = [STRONG, SLOW_STARTER]
    patient = judge(curves, lambda: MedianPruner(1, 2), trials=2, orders=4, seed=0)
    assert patient.best_lost == patient.test_lost == 0 and patient.cost == pytest.approx(1.0)
    # an eager pruner stops the slow starter at epoch 1 whenever it comes second
    eager = [judge(curves, lambda: MedianPruner(1, 0), 2, 1, seed) for seed in range(8)]
    assert {round(v.best_lost, 2) for v in eager} == {0.0, 0.19}  # 0.81 - 0.62
    assert {round(v.test_lost, 2) for v in eager} == {0.0, 0.19}  # 0.79 - 0.60
