"""What a sweep says it learnt: importances from Optuna, every claim held against the noise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import create_trial

from satsweep.metrics import sampling_sd
from satsweep.search.ledger import FIDELITY_ATTR, FINAL_ATTR, NOISE_ATTR, FinalFit, Noise
from satsweep.search.lessons import sweep_lessons

LR = FloatDistribution(1e-4, 1e-1, log=True)
WIDTH = CategoricalDistribution([16, 32])


def _study(scores: list[tuple[float, int, float]]) -> optuna.Study:
    """A real in-memory study of finished trials: (lr, width, objective) each."""
    study = optuna.create_study(direction="maximize")
    for lr, width, value in scores:
        study.add_trial(
            create_trial(
                params={"optimizer.lr": lr, "model.width": width},
                distributions={"optimizer.lr": LR, "model.width": WIDTH},
                value=value,
            )
        )
    return study


def _noise(sd_values: list[float]) -> Noise:
    return Noise(trial=0, seeds=[43, 44], values=sd_values)


def test_trials_all_within_the_band_teach_no_winner_and_no_direction() -> None:
    study = _study([(1e-3, 16, 0.50), (5e-3, 32, 0.51), (2e-2, 16, 0.49), (8e-2, 32, 0.505)])
    said = sweep_lessons(study, "val_f1_macro", _noise([0.51, 0.48, 0.53]))  # sd 0.025
    assert "No winner beyond noise" in said
    assert "shows no direction for any parameter" in said
    assert "`optimizer.lr`" not in said and "did best" not in said


def test_a_clear_signal_names_its_region_and_its_option() -> None:
    # high learning rates and width 32 win by far more than the seeds move the score
    rows = [
        (lr, width, 0.3 + 3 * lr + (0.3 if width == 32 else 0.0))
        for lr, width in [
            (1e-3, 16),
            (2e-3, 32),
            (5e-3, 16),
            (1e-2, 32),
            (3e-2, 16),
            (6e-2, 32),
            (8e-2, 32),
            (9e-2, 16),
        ]
    ]
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.60, 0.601, 0.599]))
    assert "Trial 6 leads" in said and "clearly beyond the band" in said
    assert (
        "`optimizer.lr` (importance" in said
        and "top 2 finished trials lie between 0.06 and 0.08" in said
    )
    assert "`model.width` (importance" in said and "32 did best" in said


def test_a_choice_that_moved_nothing_gets_no_winner() -> None:
    """Width's options differ by less than the noise: no option is named as better."""
    rows = [
        (1e-3, 16, 0.40),
        (2e-3, 32, 0.41),
        (1e-2, 16, 0.60),
        (2e-2, 32, 0.605),
        (5e-2, 16, 0.80),
        (8e-2, 32, 0.79),
    ]
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.80, 0.78, 0.82]))
    (width,) = [line for line in said.splitlines() if "`model.width`" in line]
    assert "did best" not in width
    assert "did not matter" in width or "no difference beyond noise" in width
    assert "`optimizer.lr` (importance" in said and "lie between 0.05 and 0.08" in said


def test_without_a_band_every_difference_is_a_hint_and_few_trials_give_no_direction() -> None:
    study = _study([(1e-3, 16, 0.4), (5e-3, 32, 0.5), (2e-2, 16, 0.45)])
    said = sweep_lessons(study, "val_f1_macro", None)
    assert "no noise band measured" in said and "read every difference below as a hint" in said
    assert "3 finished trials set it, too few for a direction" in said
    momentum = FloatDistribution(0.5, 0.95)  # a conditional parameter, set by one trial
    study.add_trial(
        create_trial(
            params={"optimizer.lr": 1e-2, "model.width": 32, "optimizer.momentum": 0.9},
            distributions={
                "optimizer.lr": LR,
                "model.width": WIDTH,
                "optimizer.momentum": momentum,
            },
            value=0.42,
        )
    )
    said = sweep_lessons(study, "val_f1_macro", None)
    assert "`optimizer.momentum`: 1 finished trial set it, too few" in said, said


def test_a_next_round_says_whether_it_paid_against_the_one_it_follows() -> None:
    from satsweep.search.lessons import previous_round

    storage = optuna.storages.InMemoryStorage()
    rows = [(1e-3, 16, 0.50), (5e-3, 32, 0.52), (2e-2, 16, 0.51), (8e-2, 32, 0.505)]
    for name, shift in (("quick", 0.0), ("quick_r2", 0.05)):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for lr, width, value in rows:
            study.add_trial(
                create_trial(
                    params={"optimizer.lr": lr, "model.width": width},
                    distributions={"optimizer.lr": LR, "model.width": WIDTH},
                    value=value + shift,
                    user_attrs={FIDELITY_ATTR: "32 px, 10 epochs, 2100 training images"},
                )
            )
    before = previous_round(storage, "quick", "val_f1_macro")
    assert before is not None and before.best == 0.52 and before.final_test is None
    said = sweep_lessons(study, "val_f1_macro", _noise([0.57, 0.565, 0.575]), before)
    assert "Against the previous round, study `quick` (band 0.0100" in said
    assert "best val_f1_macro 0.5200 -> 0.5700 (+0.0500): paid" in said
    flat = sweep_lessons(study, "val_f1_macro", _noise([0.57, 0.47, 0.67]), before)
    assert "no change beyond noise" in flat  # a band of 0.2 swallows the 0.05 gain
    assert previous_round(storage, "nope", "val_f1_macro") is None

    # the last round was noisier: its band, the wider, judges the gain
    noisy = Noise(trial=1, seeds=[43, 44], values=[0.52, 0.42, 0.62])
    optuna.load_study(study_name="quick", storage=storage).set_user_attr(
        NOISE_ATTR, dataclasses.asdict(noisy)
    )
    before = previous_round(storage, "quick", "val_f1_macro")
    said = sweep_lessons(study, "val_f1_macro", _noise([0.57, 0.565, 0.575]), before)
    assert "(band 0.2000, the wider of the two rounds')" in said
    assert "(+0.0500): no change beyond noise" in said


def test_a_round_at_another_fidelity_compares_final_models_not_best_trials() -> None:
    """Trials of twice the epochs score higher whatever their parameters: the best
    trials of two rounds at different fidelities are not compared, the final models are."""
    from satsweep.search.lessons import previous_round

    storage = optuna.storages.InMemoryStorage()
    rounds = (("quick", 0.0, "32 px, 10 epochs, 2100 training images"),
              ("quick_r2", 0.05, "32 px, 20 epochs, 2100 training images"))  # fmt: skip
    for name, shift, fidelity in rounds:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for lr, width, value in [(1e-3, 16, 0.50), (5e-3, 32, 0.52), (2e-2, 16, 0.51)]:
            study.add_trial(
                create_trial(
                    params={"optimizer.lr": lr, "model.width": width},
                    distributions={"optimizer.lr": LR, "model.width": WIDTH},
                    value=value + shift,
                    user_attrs={FIDELITY_ATTR: fidelity},
                )
            )
        final = FinalFit(1, "run", {"test_f1_macro": 0.80 + shift}, {}, "48 px for 20 epochs")
        study.set_user_attr(FINAL_ATTR, final.__dict__)
    before = previous_round(storage, "quick", "val_f1_macro")
    said = sweep_lessons(study, "val_f1_macro", _noise([0.57, 0.565, 0.575]), before)
    assert (
        "best val_f1_macro not compared: its trials ran at 32 px, 10 epochs, 2100 training "
        "images, now at 32 px, 20 epochs, 2100 training images" in said
    )
    assert "best val_f1_macro 0.5200 -> 0.5700" not in said
    assert "final model test_f1_macro 0.8000 -> 0.8500 (+0.0500): paid" in said

    # a round from before trials recorded their fidelity may have run at any
    before = dataclasses.replace(before, fidelity=None)
    said = sweep_lessons(study, "val_f1_macro", _noise([0.57, 0.565, 0.575]), before)
    assert "best val_f1_macro not compared: one round's trials did not record" in said
    assert "0.5200 -> 0.5700" not in said and "0.8000 -> 0.8500 (+0.0500): paid" in said


def test_a_lead_just_past_the_band_is_called_the_edge_of_the_noise_not_a_winner() -> None:
    """A band of 0.02 and a lead of 0.025: beyond it, but not by a clear margin."""
    rows = [(1e-3, 16, 0.500), (5e-3, 32, 0.475), (2e-2, 16, 0.40), (8e-2, 32, 0.41)]
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.50, 0.49, 0.51]))  # band 0.02
    assert "Trial 0 leads (0.5000) by 0.0250 over trial 1" in said
    assert "at the edge of the noise band (0.0200): not a clear winner" in said
    assert "clearly" not in said


def test_a_region_is_judged_by_the_trials_inside_it_against_those_outside() -> None:
    """lr's top trials sit at 0.05-0.08 and everything there scores high; width's top
    trials span its whole range, so width has no region to claim."""
    rows = [(1e-3, 16, 0.40), (2e-3, 32, 0.41), (5e-2, 16, 0.80), (8e-2, 32, 0.79)]
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.80, 0.79, 0.81]))
    (lr,) = [line for line in said.splitlines() if "`optimizer.lr`" in line]
    assert "trials in that span score 0.7950 on average, the 2 outside it 0.4050" in lr


def test_the_plots_show_what_mattered_with_plotly_js_once(outputs) -> None:
    """A real MLflow store gets a PNG per plot, slice and contour of the top parameters
    included, and one interactive page that carries plotly.js a single time."""
    from satsweep.config import load_environment
    from satsweep.search.plots import INTERACTIVE_PAGE, log_plots
    from satsweep.tracking import Tracker

    rows = [(lr, w, 0.3 + 3 * lr + (0.05 if w == 32 else 0)) for lr, w in _GRID]
    study = _study(rows)
    tracker = Tracker(load_environment([]).tracking)
    run_id = tracker.create_run(tracker.experiment_id("plots"), "parent", tags={})
    log_plots(study, ["val_f1_macro"], tracker, run_id)
    logged = {a.path for a in tracker.client.list_artifacts(run_id, "plots")}
    names = ("optimization_history", "param_importances", "parallel_coordinate", "slice")
    assert {f"plots/{name}.png" for name in (*names, "contour")} <= logged
    assert not any(path.endswith(".html") and INTERACTIVE_PAGE not in path for path in logged)
    page = outputs / "page"
    text = Path(tracker.client.download_artifacts(run_id, f"plots/{INTERACTIVE_PAGE}", str(page)))
    html = text.read_text()
    assert html.count("plotly.js v") == 1 and html.count("<section>") == len(names) + 1


_GRID = [(1e-3, 16), (2e-3, 32), (5e-3, 16), (1e-2, 32), (3e-2, 16), (6e-2, 32)]


def test_two_choices_that_moved_together_are_not_told_apart() -> None:
    """Every width-16 trial also shifted its images: the gap belongs to either knob, as on
    AID's quick sweep of 2026-12-06 (trials 0 and 1)."""
    shift = CategoricalDistribution([0.0, 0.125])
    study = optuna.create_study(direction="maximize")
    for lr, width, value in [(1e-3, 32, 0.52), (2e-3, 32, 0.51), (5e-3, 32, 0.50),
                             (1e-2, 16, 0.40), (2e-2, 16, 0.41)]:  # fmt: skip
        study.add_trial(
            create_trial(
                params={
                    "optimizer.lr": lr,
                    "model.width": width,
                    "translate": 0.125 * (width < 32),
                },
                distributions={"optimizer.lr": LR, "model.width": WIDTH, "translate": shift},
                value=value,
            )
        )
    said = sweep_lessons(study, "val_f1_macro", _noise([0.52, 0.521, 0.519]))
    (width,) = [line for line in said.splitlines() if line.startswith("- `model.width`")]
    assert "splits the finished trials exactly as `translate` does" in width
    assert "cannot tell which of the two moved the score" in width


def test_two_ranges_whose_top_spans_hold_the_same_trials_are_not_told_apart() -> None:
    """The two best trials had both the highest rates and the highest decay (as on an AID
    subset on 2026-12-06): the lead of that span belongs to either."""
    decay = FloatDistribution(1e-4, 1e-1, log=True)
    study = optuna.create_study(direction="maximize")
    for lr, wd, value in [(5e-2, 5e-2, 0.80), (4e-2, 3e-2, 0.79), (1e-3, 1e-3, 0.60),
                          (2e-3, 2e-4, 0.62), (3e-3, 5e-4, 0.61)]:  # fmt: skip
        study.add_trial(
            create_trial(
                params={"optimizer.lr": lr, "optimizer.weight_decay": wd},
                distributions={"optimizer.lr": LR, "optimizer.weight_decay": decay},
                value=value,
            )
        )
    said = sweep_lessons(study, "val_f1_macro", _noise([0.80, 0.801, 0.799]))
    lines = [
        line
        for line in said.splitlines()
        if line.startswith(("- `optimizer.lr`", "- `optimizer.weight_decay`"))
    ]
    assert len(lines) == 2 and all("cannot tell which of the two" in line for line in lines)


def test_a_span_that_scores_below_the_rest_names_no_region() -> None:
    """The two best trials bracket a poor one: their span does worse than the trials
    outside it, and that is said, not called noise."""
    rows = [(1e-2, 16, 0.80), (2e-2, 32, 0.79), (1.5e-2, 16, 0.10), (1e-3, 32, 0.70),
            (5e-2, 16, 0.70)]  # fmt: skip
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.80, 0.79, 0.81]))
    (lr,) = [line for line in said.splitlines() if line.startswith("- `optimizer.lr`")]
    assert "the span does worse than the rest, no region to name" in lr


def test_three_seeds_that_agree_by_chance_do_not_shrink_the_band_below_the_split() -> None:
    """An AID 10-class subset gave sd 0.0008 from three seeds, and a 0.016 gap was called
    real; 450 validation images cannot resolve that: the band keeps the split's floor."""
    study = _study([(1e-3, 16, 0.852), (5e-3, 32, 0.868), (2e-2, 16, 0.850), (8e-2, 32, 0.851)])
    lucky = [0.868, 0.8672, 0.8688]
    floor = sampling_sd("val_f1_macro", 0.868, 450)
    assert floor == pytest.approx((0.868 * 0.132 / 450) ** 0.5)
    noise = Noise(trial=1, seeds=[43, 44], values=lucky, sampling_sd=floor, val_images=450)
    assert noise.sd < 0.001 and noise.band == pytest.approx(2 * floor)
    assert "450 validation images" in noise.spread()
    said = sweep_lessons(study, "val_f1_macro", noise)
    assert "No winner beyond noise" in said
    seeds_only = sweep_lessons(study, "val_f1_macro", Noise(1, [43, 44], lucky))
    assert "No winner beyond noise" not in seeds_only  # what the seeds alone would claim


@pytest.mark.parametrize(
    ("metric", "value", "images", "expected"),
    [
        ("val_accuracy", 0.5, 100, 0.05),
        ("final_val_f1_macro", 0.9, 400, 0.015),
        ("test_roc_auc", 0.5, 25, 0.1),
        ("val_loss", 0.5, 100, 0.0),  # not a share of images
        ("seconds", 0.5, 100, 0.0),
        ("val_accuracy", 0.5, 0, 0.0),  # no count recorded (an older study)
    ],
)
def test_the_split_floor_is_the_binomial_standard_error_of_shares_only(
    metric: str, value: float, images: int, expected: float
) -> None:
    assert sampling_sd(metric, value, images) == pytest.approx(expected)


def test_an_option_tried_once_names_no_winner_and_a_lone_outsider_no_region() -> None:
    """One width-16 trial far below three width-32 ones: the gap may be that trial's rate
    as much as its width, so no option is named; lr's span has one trial outside it."""
    rows = [(2.6e-3, 32, 0.5385), (1.8e-3, 16, 0.4268), (2.55e-3, 32, 0.5174), (2.5e-3, 32, 0.5273)]
    said = sweep_lessons(_study(rows), "val_f1_macro", _noise([0.5385, 0.5258, 0.5451]))
    (width,) = [line for line in said.splitlines() if line.startswith("- `model.width`")]
    assert "too few trials per option to compare" in width and "did best" not in width
    (lr,) = [line for line in said.splitlines() if line.startswith("- `optimizer.lr`")]
    assert "1 finished trial outside that span, too few to compare with" in lr


def _pruned_study() -> optuna.Study:
    """Four finished trials at epoch 1 (median 0.2195, as AID's quick sweep of 2026-12-07)."""
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(4, n_warmup_steps=0)
    )
    for lr, width, value in [(2.6e-3, 32, 0.54), (1.8e-3, 16, 0.43), (2.2e-3, 32, 0.52),
                             (2.5e-3, 32, 0.53)]:  # fmt: skip
        first_epoch = {0.54: 0.252, 0.43: 0.159, 0.52: 0.218, 0.53: 0.221}[value]
        study.add_trial(
            create_trial(
                params={"optimizer.lr": lr, "model.width": width},
                distributions={"optimizer.lr": LR, "model.width": WIDTH},
                value=value,
                intermediate_values={0: first_epoch},
            )
        )
    return study


@pytest.mark.parametrize(("first_epoch", "within"), [(0.209, True), (0.120, False)])
def test_a_trial_pruned_by_less_than_its_split_resolves_is_said_to_be_untested(
    first_epoch: float, within: bool
) -> None:
    """0.209 against a median of 0.2195 on 450 images (2 sd: 0.039) is a coin's toss."""
    from satsweep.search.pruning import ExplainedPruningCallback
    from satsweep.search.settings import PrunerSettings

    study = _pruned_study()
    trial = study.ask({"optimizer.lr": LR, "model.width": WIDTH})
    median = PrunerSettings(name="median", options={"n_startup_trials": 4})
    callback = ExplainedPruningCallback(trial, "val_f1_macro", median, val_images=450)
    with pytest.raises(optuna.TrialPruned) as pruned:
        callback.on_epoch_end(0, {"val_f1_macro": first_epoch})
    assert "short of 0.2195 (the median of completed trials at that epoch)" in str(pruned.value)
    assert ("pruned to save time, not shown to be worse" in str(pruned.value)) is within
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    said = sweep_lessons(study, "val_f1_macro", _noise([0.54, 0.53, 0.545]))
    assert (f"Pruned within the noise: trial(s) {trial.number} fell short" in said) is within


def test_fewer_finished_trials_than_parameters_show_no_importance() -> None:
    """4 trials, 4 parameters: fANOVA's ranking would be its forest's seed, not the data."""
    unit = FloatDistribution(0.0, 1.0)
    names = ["a", "b", "c", "d"]
    study = optuna.create_study(direction="maximize")
    for row, value in [((0.1, 0.9, 0.3, 0.5), 0.40), ((0.8, 0.2, 0.6, 0.1), 0.60),
                       ((0.4, 0.5, 0.9, 0.7), 0.50), ((0.9, 0.1, 0.2, 0.3), 0.70)]:  # fmt: skip
        study.add_trial(
            create_trial(
                params=dict(zip(names, row, strict=True)),
                distributions=dict.fromkeys(names, unit),
                value=value,
            )
        )
    said = sweep_lessons(study, "val_f1_macro", _noise([0.70, 0.701, 0.699]))
    assert "Importances (fANOVA) need more finished trials than searched parameters" in said
    assert "(5 here, 4 finished)" in said and "(importance" not in said
