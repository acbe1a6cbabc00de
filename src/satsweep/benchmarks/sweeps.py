"""Sweep benchmarks: per-trial overhead, process model, pruning, workers, memory.

Sweeps run as users run them, ``satsweep sweep`` in a new process; their trial
times come back from the Optuna study. Random sampling with a fixed seed gives
two sweeps the same trials, whatever else differs between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from satsweep.benchmarks.harness import Comparison, at_most, median, seconds_of
from satsweep.benchmarks.training import EpochTimer, bare_fit
from satsweep.data import load_data
from satsweep.schema import RunConfig
from satsweep.search.job import SweepJob, prepare_job
from satsweep.search.ledger import RSS_ATTR, RUN_ATTR, load_study
from satsweep.search.storage import open_storage
from satsweep.search.study import build_sampler
from satsweep.tracking import Tracker

SAME_TRIALS = [  # random sampling from one seed: the trials do not depend on the results
    "sweep=quick",
    "sweep.sampler.name=random",
    "~sweep.sampler.options",
    "+sweep.sampler.options={}",
    "sweep.final_fit.enabled=false",  # trials only: the final fit is one more run
]
# AID at 32 px, 2,100 training images; the epochs are sized to the machine (below).
OVERHEAD = [*SAME_TRIALS, "data.max_per_class=100", "sweep.pruner.name=none"]
TRIAL_SECONDS = 30.0  # what the overhead sweep's trials should average: fixed costs weigh in
CALIBRATION_EPOCHS = 6  # per distinct model: a first epoch that traces, then five to time
# The quick sweep's search phase (10 epochs, its median pruner), random trials per seed.
PRUNING = [*SAME_TRIALS, "data.max_per_class=100", "sweep.n_trials=8"]
PRUNING_SEEDS = (0, 1, 2)
FRESH_TRIALS = 3  # of the overhead sweep's trials, also run as fresh processes
WORKERS = [
    *SAME_TRIALS,
    "data.max_per_class=40",
    "trainer.epochs=4",
    "sweep.n_trials=8",
    "sweep.pruner.name=none",
]
MEMORY = [
    *SAME_TRIALS,
    "data.image_size=16",
    "data.max_per_class=12",
    "data.classes=[Beach,Forest,Port,Desert]",
    "trainer.epochs=2",
    "sweep.n_trials=20",
    "sweep.pruner.name=none",
]


class Scratch:
    """A fresh outputs folder per sweep, sharing one decode cache."""

    def __init__(self, root: Path, cache: Path, extra: Sequence[str]) -> None:
        self.root, self.cache, self.extra = root, cache, list(extra)
        self.count = 0

    def args(self, overrides: Sequence[str]) -> list[str]:
        """The overrides of one benchmark sweep, in its own fresh outputs folder."""
        self.count += 1
        outputs = self.root / f"run-{self.count}"
        return [*overrides, f"paths.outputs={outputs}", f"paths.cache={self.cache}", *self.extra]


def _study(job: SweepJob) -> optuna.Study:
    return load_study(open_storage(job.base.storage), job.settings.study_name, job.base.storage.url)


def _sweep(args: Sequence[str], workers: int = 1) -> tuple[float, SweepJob, optuna.Study]:
    seconds = seconds_of(["sweep", *args, "--workers", str(workers)])
    job = prepare_job(args)
    return seconds, job, _study(job)


def _trial_seconds(job: SweepJob) -> tuple[float, float]:
    """The sweep's trials: the sum of their ``model.fit`` seconds, and the median outside it.

    The sum is the same work as the bare fits, timed inside the sweep: when the
    two disagree, the machine's speed changed between them.
    """
    client = Tracker(job.base.tracking).client
    experiment = client.get_experiment_by_name(job.settings.experiment)
    assert experiment is not None, "the sweep just ran: its experiment exists"
    runs = client.search_runs([experiment.experiment_id], "tags.`satsweep.role` = 'trial'")
    metrics = [run.data.metrics for run in runs]
    fits = sum(m["fit_seconds"] for m in metrics)
    return fits, median([m["seconds"] - m["fit_seconds"] for m in metrics])


def _test_of_best(job: SweepJob, study: optuna.Study) -> float:
    """The best trial's test macro F1: the best val of more trials is also luckier noise."""
    client = Tracker(job.base.tracking).client
    return client.get_run(study.best_trial.user_attrs[RUN_ATTR]).data.metrics["test_f1_macro"]


def _span(study: optuna.Study, count: int | None = None) -> float:
    """Seconds from the first trial's start to the last trial's end (of the first ``count``)."""
    trials = [t for t in study.trials if t.datetime_complete][:count]
    first = min(t.datetime_start for t in trials if t.datetime_start)
    return (max(_completed_at(t) for t in trials) - first).total_seconds()


def drawn_trials(job: SweepJob, count: int) -> list[list[str]]:
    """The overrides of the first ``count`` trials the job's seeded sampler will draw.

    Random sampling ignores results, so an in-memory study with the sweep's own
    sampler (worker 0's seed) asks exactly the trials the sweep will run.
    """
    study = optuna.create_study(
        sampler=build_sampler(job.settings, job.space), directions=job.settings.directions
    )
    drawn = []
    for _ in range(count):
        trial = study.ask()
        drawn.append(job.space.suggest(trial))
        study.tell(trial, state=TrialState.FAIL)
    return drawn


def epochs_for(seconds: float, scratch: Scratch, trials: int) -> int:
    """The epochs that make the overhead sweep's trials last about ``seconds`` on this machine.

    A fixed epoch count gave 19-s trials on one 2-core machine and 39-s ones on
    another, so per-trial costs weighed twice as much on the first. One bare fit
    of ``CALIBRATION_EPOCHS`` per distinct model and augmentation among the
    trials the sweep will draw gives each its seconds per epoch (the mean of
    all but the first, which traces) and its fixed cost; the trials' averages
    size the epochs. Epochs on 2 shared cores vary by half from one to the next,
    so two fits of 1 and 4 epochs (the first calibration) sized "30-s" trials at
    23 s in one run and 37 s in another.
    """
    job = prepare_job(scratch.args(OVERHEAD))
    configs = [
        job.trial_config([*overrides, f"trainer.epochs={CALIBRATION_EPOCHS}"])
        for overrides in drawn_trials(job, trials)
    ]
    dataset = load_data(configs[0])
    bare_fit(job.trial_config(["trainer.epochs=1"]), dataset)  # the process's warm-up
    timed: dict[str, tuple[float, float]] = {}  # seconds per epoch and fixed, by _fit_kind
    for cfg in configs:
        if _fit_kind(cfg) not in timed:
            timer = EpochTimer()
            total = bare_fit(cfg, dataset, [timer])
            per_epoch = sum(timer.seconds[1:]) / (len(timer.seconds) - 1)
            timed[_fit_kind(cfg)] = per_epoch, total - per_epoch * len(timer.seconds)
    per_trial = [timed[_fit_kind(cfg)] for cfg in configs]
    per_epoch = sum(p for p, _ in per_trial) / len(per_trial)
    fixed = sum(f for _, f in per_trial) / len(per_trial)
    return min(60, max(5, round((seconds - fixed) / per_epoch)))


def _fit_kind(cfg: RunConfig) -> str:
    """What sets a trial's seconds per epoch: its model and its augmentation."""
    return cfg.model.model_dump_json() + cfg.trainer.augment.model_dump_json()


def overhead_and_process_model(scratch: Scratch, trials: int) -> list[Comparison]:
    """One sweep; then its trials as bare ``model.fit`` calls and as fresh processes."""
    epochs = epochs_for(TRIAL_SECONDS, scratch, trials)
    args = scratch.args([*OVERHEAD, f"sweep.n_trials={trials}", f"trainer.epochs={epochs}"])
    swept, job, study = _sweep(args)
    trial_overrides = [job.space.suggest(t) for t in study.trials if t.state == TrialState.COMPLETE]
    configs = [job.trial_config(overrides) for overrides in trial_overrides]
    dataset = load_data(configs[0])
    bare_fit(configs[0], dataset)  # warm-up, as the sweep's worker warms up on its first trial
    bare: list[float] = []
    fresh: list[float] = []
    for index, (cfg, overrides) in enumerate(zip(configs, trial_overrides, strict=True)):
        fresh_args = [*job.base_overrides, *overrides]  # logs next to the sweep's runs
        steps = [lambda cfg=cfg: bare.append(bare_fit(cfg, dataset))]
        if index < FRESH_TRIALS:
            steps.append(lambda args=fresh_args: fresh.append(seconds_of(["train", *args])))
        for step in steps if index % 2 == 0 else steps[::-1]:  # alternate which goes first
            step()
    ratio = swept / sum(bare)
    goal, met = at_most(ratio, 1.10)
    warm = _span(study, count=len(fresh))
    mean_trial = sum(bare) / len(bare)
    sweep_fits, outside_fit = _trial_seconds(job)
    return [
        Comparison(
            name="per-trial overhead",
            a_label=f"{len(configs)}-trial sweep",
            a=swept,
            b_label="sum of bare fits",
            b=sum(bare),
            unit="s",
            ratio=ratio,
            ratio_means="A/B",
            goal=goal,
            met=met,
            repeats=1,
            note=f"{epochs} epochs, sized for {TRIAL_SECONDS:.0f}-s trials on this machine: "
            f"bare trials of {mean_trial:.0f}s on average; the sweep's own fits took "
            f"{sweep_fits:.0f}s in all (the bare fits' {sum(bare):.0f}s, timed later: the "
            f"difference is the machine's drift); each trial spent a median {outside_fit:.1f}s "
            "outside model.fit (evaluation, artifacts, model logging); the rest is process "
            "start-up, the dataset report and the sweep's plots",
        ),
        Comparison(
            name="process model",
            a_label="warm worker",
            a=warm,
            b_label="fresh process per trial",
            b=sum(fresh),
            unit="s",
            ratio=sum(fresh) / warm,
            ratio_means="B/A: times slower",
            goal="",
            met=None,
            repeats=1,
            note=f"the sweep's first {len(fresh)} trials: the warm worker's time runs from the "
            "first one's start to the last one's end (its one start-up is not counted); each "
            "fresh `satsweep train` process, as Hydra's multirun launchers start them, imports "
            "TensorFlow and traces the model anew",
        ),
    ]


def pruning(scratch: Scratch) -> Comparison:
    """The same sweeps with and without pruning, per seed: the time saved, the best lost.

    Medians over ``PRUNING_SEEDS``: one seed's trials say more about that seed's
    draw than about the pruner.
    """
    ratios, gaps, test_gaps, spans, pruned_counts = [], [], [], [], []
    for seed in PRUNING_SEEDS:
        seeded = [*PRUNING, f"sweep.sampler.seed={seed}", f"seed={seed}"]
        _, pruned_job, pruned = _sweep(scratch.args(seeded))  # the quick sweep's own pruner
        _, full_job, full = _sweep(scratch.args([*seeded, "sweep.pruner.name=none"]))
        spans.append((_span(pruned), _span(full)))
        ratios.append(spans[-1][0] / spans[-1][1])
        gaps.append(full.best_value - pruned.best_value)
        test_gaps.append(_test_of_best(full_job, full) - _test_of_best(pruned_job, pruned))
        pruned_counts.append(sum(t.state == TrialState.PRUNED for t in pruned.trials))
    ratio, gap = median(ratios), median(gaps)
    return Comparison(
        name="pruning",
        a_label="quick sweep's pruner",
        a=median([a for a, _ in spans]),
        b_label="no pruner",
        b=median([b for _, b in spans]),
        unit="s",
        ratio=ratio,
        ratio_means="A/B time",
        goal="<= 0.6, best within 0.01",
        met=ratio <= 0.60 and gap <= 0.01,
        repeats=len(PRUNING_SEEDS),
        note=f"medians over seeds {list(PRUNING_SEEDS)} of 8 random trials each: time ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; best val_f1_macro lost "
        f"{', '.join(f'{g:+.4f}' for g in gaps)}; test_f1_macro of the best trial lost "
        f"{', '.join(f'{g:+.4f}' for g in test_gaps)}; trials pruned {pruned_counts}",
    )


def workers(scratch: Scratch) -> list[Comparison]:
    """Two workers against one on the same sweep: the speed-up of parallel trials."""
    one = _sweep(scratch.args(WORKERS), workers=1)[2]
    two = _sweep(scratch.args(WORKERS), workers=2)[2]
    sqlite = _sweep(scratch.args([*WORKERS, "storage.url=sqlite:///${paths.outputs}/optuna.db"]))[2]
    per_hour = {name: len(s.trials) / _span(s) * 3600 for name, s in (("1", one), ("2", two))}
    journal_rate, sqlite_rate = per_hour["1"], len(sqlite.trials) / _span(sqlite) * 3600
    return [
        Comparison(
            name="workers",
            a_label="2 workers",
            a=per_hour["2"],
            b_label="1 worker",
            b=per_hour["1"],
            unit="trials/h",
            ratio=per_hour["2"] / per_hour["1"],
            ratio_means="A/B",
            goal="",
            met=None,
            repeats=1,
            note="2 cores: each of 2 workers gets 1 TensorFlow thread",
        ),
        Comparison(
            name="storage",
            a_label="journal file",
            a=journal_rate,
            b_label="SQLite",
            b=sqlite_rate,
            unit="trials/h",
            ratio=journal_rate / sqlite_rate,
            ratio_means="A/B",
            goal="",
            met=None,
            repeats=1,
            note="1 worker each",
        ),
    ]


def memory(scratch: Scratch) -> Comparison:
    """A worker's peak memory after its first and last trials: growth means a leak."""
    study = _sweep(scratch.args(MEMORY))[2]
    trials = sorted((t for t in study.trials if RSS_ATTR in t.user_attrs), key=_completed_at)
    first, last = trials[0].user_attrs[RSS_ATTR], trials[-1].user_attrs[RSS_ATTR]
    ratio = last / first
    goal, met = at_most(ratio, 1.2)
    return Comparison(
        name="worker memory",
        a_label=f"peak RSS after {len(trials)} trials",
        a=last,
        b_label="after 1 trial",
        b=first,
        unit="MiB",
        ratio=ratio,
        ratio_means="A/B",
        goal=goal,
        met=met,
        repeats=1,
        note="one worker, tiny trials; it re-executes itself every sweep.trials_per_process "
        "trials because Keras keeps 5-15 MB per model.fit (a bare Keras loop grows too)",
    )


def _completed_at(trial: optuna.trial.FrozenTrial) -> datetime:
    """When a finished trial ended (the trials passed here all have ended)."""
    assert trial.datetime_complete is not None
    return trial.datetime_complete
