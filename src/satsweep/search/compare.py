"""``satsweep compare STUDY``: the leaderboard of a sweep, read back from its records."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from satsweep.config import load_environment
from satsweep.search.ledger import OBJECTIVES_ATTR, load_study
from satsweep.search.record import leaderboard
from satsweep.search.storage import open_storage
from satsweep.tracking import Tracker


def compare(study_name: str, overrides: Sequence[str]) -> pd.DataFrame:
    """The study's trials, best first, with their MLflow metrics (as the parent run logs them).

    ``overrides`` say where the study and its runs are (``storage=...``, ``tracking=...``).
    """
    environment = load_environment(overrides)
    storage = environment.storage
    study = load_study(open_storage(storage), study_name, storage.url)
    objectives = list(study.user_attrs.get(OBJECTIVES_ATTR, ["value"]))
    tracker = Tracker(environment.tracking)
    tracker.check_reachable()
    return leaderboard(study, objectives, tracker)
