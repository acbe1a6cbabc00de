"""Search spaces in Hydra's override grammar, mapped to Optuna distributions."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from satsweep.errors import UserError
from satsweep.search.space import parse_space

CONDITIONAL = {
    "optimizer=sgd": {
        "optimizer.momentum": "interval(0.5, 0.95)",
        "optimizer.nesterov": "choice(true, false)",
    }
}


def test_grammar_maps_to_distributions() -> None:
    space = parse_space(
        {
            "optimizer": "choice(adam, sgd)",
            "optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
            "model.blocks": "range(2, 5)",
            "model.dense_units": "tag(int, interval(16, 256))",
            "model.dropout": "range(0.0, 0.5, 0.1)",
        },
        {},
        "sweeps/t.yaml",
    )
    by_key = {d.key: d.distribution for d in space.dimensions}
    assert by_key["optimizer"] == CategoricalDistribution(["adam", "sgd"])
    assert by_key["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert by_key["model.blocks"] == IntDistribution(2, 4)
    assert by_key["model.dense_units"] == IntDistribution(16, 256)
    assert by_key["model.dropout"] == FloatDistribution(0.0, 0.4, step=0.1)
    logged = parse_space({"model.filters": "tag(log, range(8, 33))"}, {}, "sweeps/t.yaml")
    assert logged.dimensions[0].distribution == IntDistribution(8, 32, log=True)
    stepped = parse_space({"model.filters": "range(8, 33, 8)"}, {}, "sweeps/t.yaml")
    assert stepped.dimensions[0].distribution == IntDistribution(8, 32, step=8)


def test_conditional_parameters_follow_their_group_choice() -> None:
    space = parse_space({"optimizer": "choice(adam, sgd)"}, CONDITIONAL, "sweeps/t.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        overrides = space.suggest(trial)
        keys = {o.split("=")[0] for o in overrides}
        chosen = trial.params["optimizer"]
        seen.add(chosen)
        if chosen == "adam":
            assert keys == {"optimizer"} and "optimizer.momentum" not in trial.params
        else:
            assert keys == {"optimizer", "optimizer.momentum", "optimizer.nesterov"}
            assert any(
                o in overrides for o in ("optimizer.nesterov=true", "optimizer.nesterov=false")
            )
        study.tell(trial, 0.0)
    assert seen == {"adam", "sgd"}


def test_grid_needs_discrete_dimensions() -> None:
    space = parse_space(
        {"model.blocks": "range(1, 3)", "optimizer": "choice(adam, sgd)"}, {}, "sweeps/t.yaml"
    )
    assert space.grid() == {"model.blocks": [1, 2], "optimizer": ["adam", "sgd"]}
    with pytest.raises(UserError, match="grid sampler needs choice"):
        parse_space({"optimizer.lr": "interval(0.1, 0.2)"}, {}, "sweeps/t.yaml").grid()


@pytest.mark.parametrize(
    ("params", "conditional", "named"),
    [
        ({"optimizer.lr": "interval(0.1"}, {}, "optimizer.lr"),
        ({"optimizer.lr": "0.1"}, {}, "fixed value"),
        ({"optimizer.lr": "interval(0.2, 0.1)"}, {}, "not below"),
        ({"optimizer.lr": "tag(log, interval(0, 0.1))"}, {}, "above 0"),
        ({"model.blocks": "range(5, 2)"}, {}, "empty"),
        ({}, {"optimizer=sgd": {"optimizer.momentum": "interval(0, 1)"}}, "not swept"),
        # Optuna samples log-scale integers only with step 1: 13 and 18 are off this step
        ({"model.filters": "tag(log, range(8, 33, 8))"}, {}, "choice(8, 16, 24, 32)"),
        ({"optimizer.lr": "tag(log, range(0.1, 0.5, 0.1))"}, {}, "tag(log, interval(0.1, 0.4))"),
        ({"model.blocks": "tag(log, range(0, 4))"}, {}, "start at 1 or above"),
    ],
)
def test_bad_expressions_name_the_file_and_parameter(params, conditional, named) -> None:
    with pytest.raises(UserError) as raised:
        parse_space(params, conditional, "sweeps/bad.yaml")
    assert str(raised.value).startswith("sweeps/bad.yaml") and named in str(raised.value)


def test_a_grid_smaller_than_the_budget_is_refused(outputs, tmp_path) -> None:
    from satsweep.search.job import prepare_job

    folder = tmp_path / "extra" / "sweep"
    folder.mkdir(parents=True)
    (folder / "grid.yaml").write_text(
        "# @package _global_\ndefaults:\n  - _base\n  - override /model: cnn\n  - _self_\n"
        "sweep:\n  study_name: grid\n  sampler: {name: grid}\n"
        "  params: {model.blocks: 'range(2, 4)', model.filters: 'choice(8, 16)'}\n"
    )
    search = f"hydra.searchpath=[file://{folder.parent}]"
    with pytest.raises(UserError, match=r"sweep.n_trials=5 but the grid has 4 points: set sweep"):
        prepare_job(["sweep=grid", search, "sweep.n_trials=5"])
    assert prepare_job(["sweep=grid", search, "sweep.n_trials=4"]).settings.n_trials == 4


def test_the_clock_is_read_once_per_sweep(outputs) -> None:
    """A ${now:...} value is pinned by the job: every trial composes the same one."""
    import time

    from satsweep.search.job import prepare_job

    job = prepare_job(["sweep=smoke", "seed=${now:%f}"])  # microseconds: a new seed each time
    time.sleep(0.01)
    trial = job.trial_config(["model.filters=16"])
    assert trial.seed == job.base.seed and trial.data.split.seed == job.base.seed
    assert any(o.startswith("seed=") for o in job.base_overrides)
