"""The sweep's ledger: how processes find each other's records.

A sweep is kept in two stores that know nothing of each other: Optuna's study
(trials, their parameters and values) and MLflow (runs, metrics, artifacts).
The keys that link them, the tags satsweep reads back and the trial states that
count as finished all live here, so a record written by one process (or one
version) is read the same way by all. How workers start is ``crew``'s.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from satsweep.errors import UserError
from satsweep.redact import redact
from satsweep.tracking import TAG_PREFIX

# --- processes ---------------------------------------------------------------
RAN_ENV = "SATSWEEP_WORKER_RAN"  # trials a re-executing worker ran before


# --- Optuna study and trial attributes ----------------------------------------
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # count against sweep.n_trials
OBJECTIVES_ATTR = "satsweep_objectives"  # study: the objective names, for `compare`
BACKEND_ATTR = "satsweep_backend"  # study: optuna or kerastuner, never both
FLOOR_ATTR = "satsweep_floor"  # study: the no-learning floor's metrics on the sweep's split
FINAL_ATTR = "satsweep_final_fit"  # study: the final fit's record, see FinalFit
LAUNCHER_ATTR = "satsweep_launcher"  # study: host:pid of the launcher watching it, if any
CLOSED_ATTR = "satsweep_closed"  # study: {finished, by}: a worker closed it without a launcher
NOISE_ATTR = "satsweep_noise"  # study: the best trial under other seeds, see noise.Noise
FINAL_PROGRESS_ATTR = "satsweep_final_fit_progress"  # study: {epoch, epochs, epoch_seconds}
FINAL_CLAIM_ATTR = "satsweep_final_fit_claim"  # study: {trial, owner}: who runs the final fit
PARENT_ATTR = "mlflow_parent_run_id"  # study: the sweep's parent MLflow run
EXPERIMENT_ATTR = "mlflow_experiment_id"  # study: its MLflow experiment, for offline workers
RUN_ATTR = "mlflow_run_id"  # trial: its MLflow run
RELINKED_ATTR = "mlflow_relinked_runs"  # study: offline run id -> MLflow run id, from `sync`
WORKER_ATTR = "satsweep_worker"  # trial: "host:pid" of the process running it, see storage
FAILURE_ATTR = "failure"  # trial: why it failed
RSS_ATTR = "worker_peak_rss_mib"  # trial: its worker's peak memory after it
VAL_IMAGES_ATTR = "satsweep_val_images"  # trial: the validation images its score counts
# trial: "32 px, 10 epochs, 2100 training images": scores of other fidelities do not compare
FIDELITY_ATTR = "satsweep_fidelity"
# trial: {by, resolved}: pruned short of the threshold by less than its split resolves
PRUNED_SHORT_ATTR = "satsweep_pruned_within_noise"

# --- MLflow tags -------------------------------------------------------------
RUN_NAME_TAG = "mlflow.runName"  # setting it renames the run in MLflow's store
ROLE_TAG = f"{TAG_PREFIX}role"  # sweep, trial, final, comparison
SWEEP_TAG = f"{TAG_PREFIX}sweep"  # the study name
TRIAL_TAG = f"{TAG_PREFIX}trial"  # the trial number
STATE_TAG = f"{TAG_PREFIX}trial_state"
PRUNED_TAG = f"{TAG_PREFIX}pruned"  # why a trial was pruned: its epoch, value and threshold
FAILURE_TAG = f"{TAG_PREFIX}failure"
REPRODUCE_TAG = f"{TAG_PREFIX}reproduce_command"
BACKEND_TAG = f"{TAG_PREFIX}backend"
SWEEP_FILE_TAG = f"{TAG_PREFIX}sweep_file"
TRIAL_OVERRIDES_TAG = f"{TAG_PREFIX}trial_overrides"
BEST_TRIAL_TAG = f"{TAG_PREFIX}best_trial"
BEST_RUN_TAG = f"{TAG_PREFIX}best_run_id"
FINAL_RUN_TAG = f"{TAG_PREFIX}final_run_id"
FINAL_OF_TRIAL_TAG = f"{TAG_PREFIX}final_of_trial"
FINAL_OVERRIDES_TAG = f"{TAG_PREFIX}final_overrides"
FLOOR_METHOD_TAG = f"{TAG_PREFIX}floor_method"
METHOD_TAG = f"{TAG_PREFIX}method"  # a backend race's method
TRIAL_COUNT_TAG = f"{TAG_PREFIX}trials_"  # + a state: how many trials ended in it


@dataclass(frozen=True)
class FinalFit:
    """The final model's record on the study: the trial it retrained, its run, its metrics."""

    trial: int
    run_id: str
    metrics: dict[str, float]
    # the final model's diagnosis: each rule that fired -> the config keys it names
    diagnosis: dict[str, list[str]] = field(default_factory=dict)
    fidelity: str = ""  # e.g. "48 px for 20 epochs": its scores compare with no trial's

    @staticmethod
    def of(study: optuna.Study) -> FinalFit | None:
        """The study's final-fit record, or None before the final fit has run."""
        record = study.user_attrs.get(FINAL_ATTR)
        return FinalFit(**record) if record else None


BAND_WIDTH = 2.0  # the noise band is this many standard deviations of the seeds' spread
# A gap is a finding only beyond this many bands: the band's sd comes from a few seeds
# (three scores in `quick`), and an sd from three scores is often half as large again.
CLEAR_MARGIN = 1.5


def judge_gap(gap: float, band: float | None) -> str:
    """``noise`` within the band, ``edge`` up to a clear margin beyond it, else ``clear``;
    ``unjudged`` without a band."""
    if band is None:
        return "unjudged"
    if abs(gap) <= band:
        return "noise"
    return "edge" if abs(gap) <= CLEAR_MARGIN * band else "clear"


@dataclass(frozen=True)
class Noise:
    """The best trial's objective under several seeds, and the band it gives."""

    trial: int
    seeds: list[int]
    values: list[float]  # the trial's own value first, then one per repeat
    # What the validation set's size alone allows (metrics.sampling_sd); 0 when unknown.
    # Three seeds can agree by chance to 0.001 where 450 images cannot resolve 0.02.
    sampling_sd: float = 0.0
    val_images: int = 0

    @property
    def sd(self) -> float:
        """The seed-to-seed standard deviation of the objective."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def band(self) -> float:
        """Differences within this are noise, not lessons: of the seeds, or of the split."""
        return BAND_WIDTH * max(self.sd, self.sampling_sd)

    def spread(self) -> str:
        """The sd the band comes from, in words: the seeds', or the split's when larger."""
        seeds = f"seed-to-seed sd {self.sd:.4f}"
        if self.sampling_sd <= self.sd:
            return seeds
        images = f"{self.val_images} validation images"
        return f"{seeds}, below the {self.sampling_sd:.4f} that {images} allow"

    @staticmethod
    def of(study: optuna.Study) -> Noise | None:
        """The study's noise record, or None before it was measured."""
        record = study.user_attrs.get(NOISE_ATTR)
        return Noise(**record) if record else None


def chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The trial to retrain: the best one (by the first objective on a Pareto front)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    if len(study.directions) == 1:
        return study.best_trial
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    return min(study.best_trials, key=lambda t: sign * t.values[0])


def tied_with_best(study: optuna.Study, noise: Noise) -> list[int]:
    """The complete trials whose objective lies within the band of the best one's."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete or len(study.directions) > 1:
        return []
    best = study.best_value
    return sorted(t.number for t in complete if abs(t.values[0] - best) <= noise.band)


def load_study(storage: BaseStorage, study_name: str, url: str) -> optuna.Study:
    """An existing study of the storage at ``url``; a name it does not hold is a user error."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(
            f"no study named {study_name!r} in {redact(url)}: "
            f"the studies are {', '.join(names) or '(none)'}"
        ) from error


def trial_run_id(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """The MLflow run of a trial, following ``satsweep sync``'s re-links of offline runs.

    Optuna cannot change a finished trial, so re-links live on the study.
    """
    run_id = str(trial.user_attrs.get(RUN_ATTR, ""))
    return str(study.user_attrs.get(RELINKED_ATTR, {}).get(run_id, run_id))


def run_of_study(
    storage: BaseStorage, url: str, study_name: str, trial: int | None, final: bool
) -> str:
    """The MLflow run id of a sweep's final model, best trial, or trial number ``trial``."""
    study = load_study(storage, study_name, url)
    if final:
        record = FinalFit.of(study)
        if record is None:
            raise UserError(
                f"study {study_name!r} has no final model yet: run the sweep to its end "
                "(with sweep.final_fit.enabled=true), or use --best"
            )
        return record.run_id
    if trial is None:
        try:
            chosen = study.best_trial
        except ValueError as error:
            raise UserError(f"study {study_name!r} has no complete trial yet") from error
    else:
        matches = [t for t in study.trials if t.number == trial]
        if not matches:
            held = f"trials 0 to {len(study.trials) - 1}" if study.trials else "no trial yet"
            raise UserError(f"study {study_name!r} has no trial {trial}: it has {held}")
        chosen = matches[0]
    run_id = trial_run_id(study, chosen)
    if not run_id:
        raise UserError(f"trial {chosen.number} of {study_name!r} has no MLflow run")
    return run_id
