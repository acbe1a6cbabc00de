"""A damaged journal file: a cut-short write heals itself, other damage has a repair command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from optuna.trial import TrialState

from satsweep.cli import run
from tests.conftest import journal_study, run_satsweep

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _finished(outputs: Path) -> list[tuple[int, list[float] | None]]:
    return [(t.number, t.values) for t in journal_study(outputs).trials if t.state in FINISHED]


@pytest.mark.slow
def test_a_damaged_journal_is_healed_or_repaired_and_the_study_goes_on(
    outputs, sweep_args, capsys, caplog
) -> None:
    args = [*sweep_args, "trainer.epochs=1", "sweep.pruner.name=none"]
    assert run_satsweep("sweep", *args, "sweep.n_trials=2").returncode == 0
    journal = outputs / "optuna.journal"
    before = _finished(outputs)
    assert len(before) == 2

    # a process killed mid-write leaves half an operation, with no newline
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines) + lines[-1][: len(lines[-1]) // 2])
    assert run(["compare", "smoke"]) == 0
    assert "its last operation was cut short" in caplog.text
    assert journal.read_bytes() == b"".join(lines) and _finished(outputs) == before

    # one damaged line in the middle: a user attribute of a trial, garbled
    number = next(i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 8 and i > 5)
    garbled = lines[number].replace(b'"user_attr":{', b'"user_attr":{{\xff')
    journal.write_bytes(b"".join([*lines[:number], garbled, *lines[number + 1 :]]))
    assert run(["compare", "smoke"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"damaged at line {number + 1}" in error, error
    assert f"satsweep repair-journal {journal}" in error

    assert run(["repair-journal", str(journal)]) == 0
    said = capsys.readouterr().out
    assert f"left out damaged line(s) {number + 1}" in said and "set aside 0" in said
    assert (outputs / "optuna.journal.damaged-1").read_bytes().count(b"\xff") == 1
    assert _finished(outputs) == before  # no finished trial lost

    resumed = run_satsweep("sweep", *args, "sweep.n_trials=3")  # the study is usable
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _finished(outputs)[:2] == before and len(_finished(outputs)) == 3
