"""Optuna storages from config: journal files and SQLite live with their lock files."""

from __future__ import annotations

import optuna

from satsweep.schema import StorageConfig
from satsweep.search.storage import budget_lock, open_storage
from satsweep.search.study import worker_seed


def _config(url: str) -> StorageConfig:
    return StorageConfig(
        url=url,
        heartbeat_interval=None,
        grace_period=None,
        failed_trial_max_retry=1,
        reconnect_seconds=0,
    )


def test_sqlite_storage_gets_its_folder_and_keeps_its_lock_beside_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a lock file in the working directory would show up here
    folder = tmp_path / "not" / "yet"
    cfg = _config(f"sqlite:///{folder}/optuna.db")
    study = optuna.create_study(study_name="s", storage=open_storage(cfg))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with budget_lock(cfg, "s"):
        assert (folder / ".optuna.db.s.budget.lock").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not"]


def test_resumed_workers_draw_new_seeds_and_fresh_ones_keep_theirs() -> None:
    assert worker_seed(3, 0) == 3 and worker_seed(3, 1) == 4
    resumed = {worker_seed(3, index, history) for index in (0, 1) for history in (4, 8)}
    assert len(resumed) == 4 and not resumed & {3, 4}
    assert worker_seed(3, None) is None and worker_seed(None, 0) is None
