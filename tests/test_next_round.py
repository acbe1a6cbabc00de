"""``satsweep next``: the next round's sweep file, written from a real study and its real job."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import optuna
import pytest
from optuna.trial import create_trial

from satsweep.cli import run
from satsweep.search.job import job_path, prepare_job, save_job
from satsweep.search.ledger import FINAL_ATTR, NOISE_ATTR, FinalFit, Noise
from satsweep.search.next_round import next_study_name
from satsweep.search.storage import open_storage


def _quick_study(
    outputs, directions=("maximize",), trials: int = 8, overrides: tuple[str, ...] = ()
) -> optuna.Study:
    """The quick sweep's job, saved as a launcher saves it, and a study of finished trials
    in its journal where the learning rate matters and nothing else does."""
    job = prepare_job(["sweep=quick", *overrides])
    save_job(job, job_path(job))
    study = optuna.create_study(
        study_name="quick", storage=open_storage(job.base.storage), directions=list(directions)
    )
    rng = np.random.default_rng(0)
    distributions = {d.key: d.distribution for d in job.space.dimensions}
    for _ in range(trials):
        params = {
            key: (
                rng.choice(dist.choices).item()
                if isinstance(dist, optuna.distributions.CategoricalDistribution)
                else float(np.exp(rng.uniform(np.log(dist.low), np.log(dist.high))))
            )
            for key, dist in distributions.items()
        }
        score = 0.3 + 30 * params["optimizer.lr"] + rng.normal(0, 0.002)
        values = [score] * len(directions)
        study.add_trial(create_trial(params=params, distributions=distributions, values=values))
    return study


def test_next_narrows_what_mattered_and_fixes_what_did_not(outputs, tmp_path, capsys) -> None:
    study = _quick_study(outputs)
    best = study.best_trial
    noise = Noise(best.number, [43, 44], [best.value, best.value - 0.01, best.value + 0.005])
    study.set_user_attr(NOISE_ATTR, dataclasses.asdict(noise))
    out = tmp_path / "conf" / "sweep" / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "run it with: satsweep sweep sweep=quick_r2" in said
    text = out.read_text()
    assert text.startswith("# @package _global_") and "previous: quick" in text
    assert "  - quick " in text  # the last round's file is the new one's base
    # the width made no difference beyond noise: fixed at the best trial's value, unsearched
    assert "model.width: null    # fixed above: fixed at the best trial's value" in text
    assert "optimizer.lr: tag(log, interval(" in text and "narrowed: trials in the top" in text

    # the file composes and validates as a sweep, in the same grammar
    job = prepare_job(["sweep=quick_r2", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    assert job.settings.study_name == "quick_r2" and job.settings.previous == "quick"
    assert "model.width" not in job.space_params
    assert job.base.model.width == best.params["model.width"]
    (lr,) = [d.distribution for d in job.space.dimensions if d.key == "optimizer.lr"]
    assert lr.log and lr.low > 1e-3 and lr.high >= best.params["optimizer.lr"]
    assert run(["next", "quick", "--out", str(out)]) == 2  # never overwrites a file
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "said"),
    [
        ("none", "no study named 'nope'"),
        ("unfinished", "has no finished trial"),
        ("two objectives", "plans one-objective studies"),
    ],
)
def test_next_refuses_what_it_cannot_plan_in_one_line(outputs, tmp_path, capsys, make, said):
    name = "nope"
    if make == "unfinished":
        _quick_study(outputs, trials=0)
        name = "quick"
    if make == "two objectives":
        _quick_study(outputs, directions=("maximize", "minimize"))
        name = "quick"
    assert run(["next", name, "--out", str(tmp_path / "r2.yaml")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0], lines


def test_round_names_count_up() -> None:
    assert next_study_name("quick") == "quick_r2"
    assert next_study_name("quick_r2") == "quick_r3"
    assert next_study_name("my_r") == "my_r_r2"


def test_the_final_models_diagnosis_adds_its_keys_with_a_reason(outputs, tmp_path) -> None:
    """Overfitting named dropout, mixup, weight decay and the data: the searchable ones join
    the space with a range, the data key is left to the user, nothing is searched twice."""
    study = _quick_study(outputs)
    keys = ["trainer.augment.mixup", "optimizer.weight_decay", "model.dropout"]
    final = FinalFit(0, "run", {}, {"overfitting": [*keys, "data.max_per_class"]})
    study.set_user_attr(FINAL_ATTR, dataclasses.asdict(final))
    out = tmp_path / "conf" / "sweep" / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    text = out.read_text()
    found = "# added: the final model's diagnosis found overfitting"
    assert f"model.dropout: interval(0.0, 0.5)    {found}" in text
    assert f"trainer.augment.mixup: choice(0.0, 0.2)    {found}" in text
    assert text.count("\n    optimizer.weight_decay: ") == 1  # searched already: not re-added
    assert "also named data.max_per_class (overfitting): set it by hand" in text
    job = prepare_job(["sweep=quick_r2", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    assert {"model.dropout", "trainer.augment.mixup"} <= set(job.space_params)


def test_too_few_finished_trials_make_the_next_rounds_first_trials_unprunable(
    outputs, tmp_path, capsys
) -> None:
    """A median pruner from the second finished trial left 3 finished: more trials alone
    would be pruned too, so the next round's first 6 (one more than the 5 parameters) run
    to the end, from a new draw. The last round's seed came from the command line: the
    next command leaves it out, or it would beat the file's."""
    early = ("sweep.pruner.options.n_startup_trials=2", "sweep.sampler.seed=3")
    _quick_study(outputs, trials=3, overrides=(*early, "data.image_size=24"))
    out = tmp_path / "conf" / "sweep" / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    (command,) = [line for line in capsys.readouterr().out.splitlines() if "run it" in line]
    assert "sweep.sampler.seed" not in command and "data.image_size=24" in command
    text = out.read_text()
    assert "n_startup_trials: 6        # the first 6 trials are never pruned" in text
    assert "seed: 4        # a new draw: seed 3 would repeat" in text
    assert "kept: 3 finished trials, too few to judge" in text
    conf = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    job = prepare_job(["sweep=quick_r2", conf, "data.image_size=24"])
    assert job.settings.pruner.options == {"n_startup_trials": 6, "n_warmup_steps": 0}
    assert job.settings.sampler.seed == 4 and job.settings.n_trials == 8
    assert set(job.space_params) == set(prepare_job(["sweep=quick"]).space_params)


def test_too_few_finished_under_a_pruner_that_already_waits_doubles_the_trials(
    outputs, tmp_path
) -> None:
    """A pruner that already lets the first 6 trials finish: 3 finished (failures, say)
    ask for more trials, not for a pruner setting."""
    waits = ("sweep.pruner.options.n_startup_trials=6",)
    _quick_study(outputs, trials=3, overrides=waits)
    out = tmp_path / "conf" / "sweep" / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    assert "n_startup_trials" not in out.read_text()
    conf = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    job = prepare_job(["sweep=quick_r2", conf, *waits])
    assert job.settings.n_trials == 16
    assert job.settings.pruner.options.get("n_startup_trials") == 6


def test_a_round_too_short_for_its_unpruned_trials_gets_more_trials(outputs, tmp_path) -> None:
    """4 trials cannot hold the 6 that must finish: the pruner waits for 6, and 8 run."""
    _quick_study(
        outputs,
        trials=3,
        overrides=("sweep.pruner.options.n_startup_trials=2", "sweep.n_trials=4"),
    )
    out = tmp_path / "conf" / "sweep" / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    job = prepare_job(["sweep=quick_r2", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    assert job.settings.n_trials == 8
    assert job.settings.pruner.options.get("n_startup_trials") == 6


# AID's quick sweep of 2026-12-07: its four finished trials (lr, weight decay, width,
# translate, label smoothing, val macro F1) and its seed repeats of trial 0
LONE_WIDTH_16 = [
    (0.002612, 0.01449, 32, 0.0, 0.1, 0.5385),
    (0.001803, 0.007343, 16, 0.125, 0.0, 0.4268),
    (0.002168, 0.0007497, 32, 0.0, 0.0, 0.5174),
    (0.002493, 0.004135, 32, 0.125, 0.1, 0.5273),
]
TWO_MORE = [(0.0022, 0.0145, 32, 0.125, 0.0, 0.52), (0.0024, 0.0144, 32, 0.0, 0.1, 0.53)]


def _searched_lines(
    outputs, tmp_path, rows, overrides: tuple[str, ...] = (), final: FinalFit | None = None
) -> tuple[dict[str, str], str]:
    """`satsweep next` on a quick study of ``rows`` (and its ``final`` fit): each searched
    key's line, and the file."""
    study = _quick_study(outputs, trials=0, overrides=overrides)
    distributions = {d.key: d.distribution for d in prepare_job(["sweep=quick"]).space.dimensions}
    keys = list(distributions)  # lr, weight decay, width, translate, label smoothing
    for *values, score in rows:
        params = dict(zip(keys, values, strict=True))
        study.add_trial(create_trial(params=params, distributions=distributions, value=score))
    noise = Noise(0, [43, 44], [0.5385, 0.5258, 0.5451])
    study.set_user_attr(NOISE_ATTR, dataclasses.asdict(noise))
    if final is not None:
        study.set_user_attr(FINAL_ATTR, dataclasses.asdict(final))
    out = tmp_path / "quick_r2.yaml"
    assert run(["next", "quick", "--out", str(out)]) == 0
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("    ") and "#" in line]
    keyed = {line.split(":")[0].strip(): line for line in lines}
    return {key: line for key, line in keyed.items() if "." in key}, text


def test_fewer_finished_trials_than_parameters_judge_nothing_and_ask_for_more(
    outputs, tmp_path
) -> None:
    """4 finished trials cannot tell 5 parameters apart: every key stays, and the next
    round lets its first 6 finish."""
    searched, text = _searched_lines(outputs, tmp_path, LONE_WIDTH_16)
    assert len(searched) == 5
    assert all("kept: 4 finished trials cannot tell 5 parameters apart (6 needed)" in line
               for line in searched.values())  # fmt: skip
    assert "model.width: choice(16, 32)" in searched["model.width"]
    assert "n_startup_trials: 6        # the first 6 trials are never pruned" in text
    assert "judged from 6" in text and "n_trials:" not in text  # 8 trials hold those 6


def test_an_option_tried_once_is_neither_narrowed_away_nor_fixed(outputs, tmp_path) -> None:
    """Width 16's one trial also had its own rate, shift and smoothing: its 0.10 gap is
    not width's, so width stays searched, neither narrowed to 32 nor fixed."""
    searched, text = _searched_lines(outputs, tmp_path, LONE_WIDTH_16 + TWO_MORE)
    assert "kept: 16 had fewer than 2 finished trials" in searched["model.width"]
    assert "Every finished trial tied" not in text  # trials beyond the band: no offer
    assert "model.width: choice(16, 32)" in searched["model.width"]


def test_a_round_where_every_trial_tied_is_offered_twice_the_budget(outputs, tmp_path) -> None:
    """The same round again would tie again: the file offers longer trials or more data,
    as overrides on its command, and keeps every key searched."""
    rows = [(*row[:-1], 0.52 + 0.001 * i) for i, row in enumerate(LONE_WIDTH_16 + TWO_MORE)]
    searched, text = _searched_lines(outputs, tmp_path, rows)
    assert all("kept: every finished trial is within the noise band" in line
               for line in searched.values())  # fmt: skip
    assert "# Every finished trial tied with the best" in text
    assert "#   trainer.epochs=20    (the trials ran 10 epochs)" in text
    assert "#   data.max_images=6000    (the trials drew on 3000 images, this on 6000" in text


def test_no_more_data_is_offered_where_the_cap_per_class_holds_it_back(outputs, tmp_path):
    """With 100 images per class, AID's 30 classes give 3,000 images whatever
    ``data.max_images`` says: only longer trials are offered."""
    rows = [(*row[:-1], 0.52 + 0.001 * i) for i, row in enumerate(LONE_WIDTH_16 + TWO_MORE)]
    _, text = _searched_lines(outputs, tmp_path, rows, ("data.max_per_class=100",))
    assert "#   trainer.epochs=20" in text and "data.max_images=" not in text


def test_no_budget_is_offered_on_a_key_the_round_searched(outputs) -> None:
    """Trials that searched their epochs ran at several: "the trials ran 10 epochs" would
    be false, and the override would fight the search."""
    from satsweep.search.next_round import _higher_fidelity

    plain = prepare_job(["sweep=quick"])
    assert "  trainer.epochs=20    (the trials ran 10 epochs)" in _higher_fidelity(plain, set())
    searched = prepare_job(["sweep=quick", "+sweep.params={trainer.epochs: 'choice(10, 20)'}"])
    offered = _higher_fidelity(searched, set())
    assert not any("trainer.epochs=" in line for line in offered)
    assert any("data.max_images=6000" in line for line in offered)
    # trials on a share of the training split are offered twice the share, up to all of it
    for share, offer in ((0.3, "data.train_share=0.6"), (0.7, "data.train_share=1")):
        shared = _higher_fidelity(prepare_job(["sweep=quick", f"data.train_share={share}"]), set())
        assert any(line.startswith(f"  {offer}    ") for line in shared), shared
        assert not any("data.max_images=" in line for line in shared)
    swept = "+sweep.params={data.train_share: 'choice(0.3, 0.6)'}"
    offered = _higher_fidelity(prepare_job(["sweep=quick", "data.train_share=0.3", swept]), set())
    assert not any("data." in line for line in offered)


def test_a_final_fit_that_keeps_the_trials_share_is_warned_of(outputs, caplog) -> None:
    """Trials on a share of the training images are cheap; an answer on it is seldom meant."""
    warning = "add data.train_share=1.0 to sweep.final_fit.overrides"
    swept = "+sweep.params={data.train_share: 'choice(0.3, 0.6)'}"
    for overrides in (["data.train_share=0.3"], [swept]):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="satsweep"):
            prepare_job(["sweep=quick", *overrides])
        assert warning in caplog.text, overrides
    for overrides in (
        [],
        ["data.train_share=0.3", "sweep.final_fit.overrides=['data.train_share=1.0']"],
        ["data.train_share=0.3", "sweep.final_fit.enabled=false"],
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="satsweep"):
            prepare_job(["sweep=quick", *overrides])
        assert warning not in caplog.text, overrides


def test_no_budget_is_offered_on_a_key_the_next_round_adds(outputs, tmp_path) -> None:
    """A tied round whose final model was weak: the next round searches the epochs the
    diagnosis named, so offering one epoch count on its command would contradict the file."""
    rows = [(*row[:-1], 0.52 + 0.001 * i) for i, row in enumerate(LONE_WIDTH_16 + TWO_MORE)]
    final = FinalFit(0, "run", {}, {"weak model": ["trainer.epochs"]})
    searched, text = _searched_lines(outputs, tmp_path, rows, final=final)
    assert "added: the final model's diagnosis found weak model" in searched["trainer.epochs"]
    assert "# Every finished trial tied with the best" in text
    assert "trainer.epochs=" not in text
    assert "#   data.max_images=6000" in text
