"""``satsweep compare STUDY``: the leaderboard of a sweep, in the terminal or as CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

from satsweep.config import load_run_config
from satsweep.errors import UserError
from satsweep.redact import redact
from satsweep.report import leaderboard_table, wide_console
from satsweep.search.report import leaderboard
from satsweep.search.storage import open_storage
from satsweep.tracking import Tracker

OBJECTIVES_ATTR = "satsweep_objectives"


def compare(study_name: str, overrides: Sequence[str], csv: str | None) -> None:
    cfg = load_run_config(overrides)  # for the storage and tracking settings
    storage = open_storage(cfg.storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as error:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise UserError(
            f"no study named {study_name!r} in {redact(cfg.storage.url)}: "
            f"the studies are {', '.join(names) or '(none)'}"
        ) from error
    objectives = list(study.user_attrs.get(OBJECTIVES_ATTR, ["value"]))
    tracker = Tracker(cfg.tracking)
    tracker.check_reachable()
    table = leaderboard(study, objectives, tracker)
    console = wide_console()
    console.print(leaderboard_table(table, f"study {study_name}", console.width, rows=len(table)))
    if csv:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        console.print(f"wrote {csv}")
