"""``satsweep compare-backends``: a real, tiny race of Optuna and KerasTuner methods."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from satsweep.benchmarks.backends import MethodRun, summarise
from satsweep.errors import UserError
from tests.conftest import run_satsweep

METHODS = {"optuna_tpe_pruned", "optuna_random", "kerastuner_hyperband", "kerastuner_bayesian"}


def _run(method: str, seed: int, best: float | None, curve: list[tuple[float, float]]):
    return MethodRun(method, seed, f"{method}-s{seed}", 30.0, len(curve), best, None, curve)


def test_summary_times_each_method_to_near_the_overall_best() -> None:
    runs = [
        _run("fast", 0, 0.80, [(2.0, 0.70), (5.0, 0.80)]),
        _run("fast", 1, 0.78, [(4.0, 0.78)]),
        _run("slow", 0, 1.00, [(1.0, 0.50), (20.0, 1.00)]),
        _run("slow", 1, 0.60, [(9.0, 0.60)]),
    ]
    table = summarise(runs, maximize=True).set_index("method")
    assert table.loc["slow", "best_val"] == pytest.approx(0.80)
    assert table.loc["fast", "best_val"] == pytest.approx(0.79)
    # 95% of the best any method found (1.00): only slow's seed 0 gets there, at 20 s
    assert table.loc["slow", "seconds_to_95pct"] == 20.0
    assert table.loc["slow", "seeds_reaching_95pct"] == "1/2"
    assert pd.isna(table.loc["fast", "seconds_to_95pct"])


def test_summary_of_a_minimised_objective_ranks_low_values_first() -> None:
    runs = [_run("a", 0, 0.42, [(1.0, 0.60), (3.0, 0.42)]), _run("b", 0, 0.40, [(6.0, 0.40)])]
    table = summarise(runs, maximize=False)
    assert list(table["method"]) == ["b", "a"]
    assert table.set_index("method").loc["a", "seconds_to_95pct"] == 3.0  # 0.42 <= 0.40/0.95


def test_summary_without_any_complete_trial_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"sweep\.compare\.budget"):
        summarise([_run("a", 0, None, [])], maximize=True)


@pytest.mark.slow
def test_compare_backends_races_four_methods_and_logs_one_comparison(outputs, sweep_args) -> None:
    result = run_satsweep(
        "compare-backends",
        *[a for a in sweep_args if not a.startswith("sweep.n_trials")],
        "trainer.epochs=2",
        "sweep.compare.budget=null",  # an equal-trials race: no wall-clock budget in a test
        "sweep.compare.trials=1",
        "sweep.compare.seeds=[0]",
        "model.filters=choice(8)",  # a sweep expression on the command line reaches every method
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(method in result.stdout for method in METHODS)

    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("smoke-compare").experiment_id
    runs = client.search_runs([experiment])
    [comparison] = [r for r in runs if r.data.tags.get("satsweep.role") == "comparison"]
    assert comparison.info.status == "FINISHED"
    comparison_id = comparison.info.run_id
    artifacts = {a.path for a in client.list_artifacts(comparison_id)}
    assert {"comparison.csv", "runs.csv", "best_so_far.png", "sweep.yaml"} <= artifacts
    table = pd.read_csv(client.download_artifacts(comparison_id, "comparison.csv"))
    assert set(table["method"]) == METHODS
    assert (table["trials"] >= 1).all() and table["best_val"].notna().all()

    sweeps = [r for r in runs if r.data.tags.get("satsweep.role") == "sweep"]
    assert {r.data.tags["satsweep.method"] for r in sweeps} == METHODS
    assert all(r.data.tags["mlflow.parentRunId"] == comparison_id for r in sweeps)
    trials = [r for r in runs if r.data.tags.get("satsweep.role") == "trial"]
    backends = {r.data.tags["satsweep.backend"] for r in trials}
    assert backends == {"optuna", "kerastuner"}
    assert {r.data.params["model.filters"] for r in trials} == {"8"}
