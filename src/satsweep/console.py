"""The terminal: run summaries, leaderboards, verdicts and a sweep's live progress.

The one module that prints, with rich. The engine returns results and the CLI
hands them here; nothing below the CLI and the API imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.progress_bar import ProgressBar
from rich.table import Table

from satsweep.analysis.diagnosis import one_line
from satsweep.metrics import RESULT_PREFIXES
from satsweep.redact import redact
from satsweep.search.description import noise_sentence
from satsweep.search.progress import Snapshot
from satsweep.search.record import FINAL_FLOOR_ROW, FINAL_ROW, FLOOR_ROW, SUMMARY_ROWS

if TYPE_CHECKING:
    from satsweep.reproduction import Verdict
    from satsweep.search.job import SweepJob
    from satsweep.search.ledger import Noise
    from satsweep.training import TrainResult

LEADERBOARD_ROWS = 15
HIDDEN_IN_TERMINAL = ("mlflow_run_id", "final_val_accuracy", "test_accuracy")
WIDE_CONSOLE = 200  # leaderboards are wide; CI logs have no terminal width to respect


def wide_console() -> Console:
    """A console wide enough for leaderboards when the output is not a terminal."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE_CONSOLE)


def print_train_summary(result: TrainResult, console: Console | None = None) -> None:
    """A run's metrics, its diagnosis and where to find it in MLflow."""
    console = console or Console()
    table = Table(
        title=f"{len(result.class_names)} classes, {result.epochs_run} epochs, "
        f"{result.seconds:.1f}s"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(result.metrics.items()):
        if name.startswith(RESULT_PREFIXES):
            table.add_row(name, f"{value:.4f}")
    console.print(table)
    if result.diagnosis:
        console.print(one_line(result.diagnosis))
    console.print(f"MLflow run {result.run_id}: {result.link or '(offline)'}", soft_wrap=True)


def leaderboard_table(
    table: pd.DataFrame, title: str, width: int, rows: int = LEADERBOARD_ROWS
) -> Table:
    """The leaderboard as wide as ``width`` allows: columns are dropped, never wrapped.

    Columns keep their order of importance (trial, state, objectives, metrics,
    then parameters); those that do not fit are named in the caption.
    ``--csv`` output keeps every column.
    """
    kept = _kept_rows(table, rows)
    columns = [c for c in table.columns if c not in HIDDEN_IN_TERMINAL]
    headers = _short_headers(columns)
    cells = {c: [_cell(v) for v in kept[c]] for c in columns}
    shown, used = [], 1  # the table's left border
    for column in columns:
        needed = max(len(headers[column]), *map(len, cells[column]), 1) + 3  # padding, border
        if used + needed <= width:
            shown.append(column)
            used += needed
    dropped = [headers[c] for c in columns if c not in shown]
    rendered = Table(
        title=title,
        caption=f"not shown: {', '.join(dropped)} (a wider terminal, or --csv)"
        if dropped
        else None,
    )
    for column in shown:
        rendered.add_column(
            headers[column], justify="left" if column == "state" else "right", no_wrap=True
        )
    for index in range(len(kept)):
        rendered.add_row(*(cells[c][index] for c in shown))
    return rendered


def _short_headers(columns: list[str]) -> dict[str, str]:
    """``trainer.augment.translate`` -> ``translate`` where the last part is unique."""
    last = [str(c).rsplit(".", 1)[-1] for c in columns]
    return {
        c: short if last.count(short) == 1 else str(c)
        for c, short in zip(columns, last, strict=True)
    }


def _kept_rows(table: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The first ``rows`` trials, with a sweep's final model above them and its floor below."""
    if "trial" not in table.columns:  # not a sweep's leaderboard
        return table.head(rows)
    first = table[table["trial"].isin([FINAL_ROW, FINAL_FLOOR_ROW])]
    trials = table[~table["trial"].isin(SUMMARY_ROWS)].head(rows)
    return pd.concat([first, trials, table[table["trial"] == FLOOR_ROW]])


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_leaderboard(table: pd.DataFrame, title: str) -> None:
    """Every row of a leaderboard (``satsweep compare``), as wide as it needs."""
    console = wide_console()
    console.print(leaderboard_table(table, title, console.width, rows=len(table)))


def print_sweep_summary(
    job: SweepJob,
    table: pd.DataFrame,
    noise: Noise | None = None,
    lessons: str = "",
    console: Console | None = None,
) -> None:
    """The sweep's leaderboard (best first, then its final model and floor) and its answer,
    with the seed noise that says which differences mean nothing."""
    console = console or wide_console()
    if table.empty:
        console.print("no trials ran")
        return
    console.print(leaderboard_table(table, f"sweep {job.settings.study_name}", console.width))
    complete = table[table["state"] == "complete"]
    if complete.empty:
        console.print("no trial completed")
        return
    best = complete.iloc[0]
    objective = job.settings.objectives[0]
    console.print(
        f"best trial: {int(best['trial'])} with {objective}={best[objective]:.4f} "
        f"(MLflow run {best['mlflow_run_id']})"
    )
    if noise is not None:
        console.print(f"seed noise: {noise_sentence(noise, objective, table)}", soft_wrap=True)
    rows = {kind: table[table["trial"] == kind] for kind in SUMMARY_ROWS}
    if not rows[FINAL_ROW].empty:
        final = rows[FINAL_ROW].iloc[0]
        searched = list(table.columns[table.columns.get_loc("seconds") + 1 :])
        params = [c for c in searched if c != "mlflow_run_id" and _cell(final[c]) != "-"]
        console.print(
            f"final model ({final['state']}, retrained): {_scores(final)}"
            + (f" (noise of the search: {noise.spread()})" if noise else "")
            + " "
            f"({', '.join(f'{c}={_cell(final[c])}' for c in params) or 'no searched parameter'};"
            f" MLflow run {final['mlflow_run_id']})",
            soft_wrap=True,
        )
    for kind, split in ((FINAL_FLOOR_ROW, "the final model's"), (FLOOR_ROW, "the trials'")):
        if not rows[kind].empty:
            console.print(f"no-learning floor of {split} split: {_scores(rows[kind].iloc[0])}")
    if lessons:
        console.print(Markdown(lessons))
    answer = rows[FINAL_ROW].iloc[0] if not rows[FINAL_ROW].empty else best
    print_next_commands(job, str(answer["mlflow_run_id"]), console)


def _scores(row: pd.Series) -> str:
    val = row.get("val_f1_macro", row.get("final_val_f1_macro"))
    return f"test_f1_macro={_cell(row.get('test_f1_macro'))} val_f1_macro={_cell(val)}"


def print_next_commands(job: SweepJob, run_id: str, console: Console) -> None:
    """Where a user goes from here: the runs in the UI, the leaderboard, a reproduction."""
    study, tracking = job.settings.study_name, job.base.tracking
    local = tracking.uri.startswith("sqlite:")
    ui = f"mlflow ui --backend-store-uri {tracking.uri}" if local else f"open {redact(tracking.ui)}"
    console.print("next:", style="bold")
    for command, why in (
        (ui, "compare the runs in the MLflow UI (make ui in a checkout)" if local else "the runs"),
        (f"satsweep compare {study}", "this leaderboard again, --csv for every column"),
        (f"satsweep next {study}", "write the next round's sweep file from these lessons"),
        (f"satsweep reproduce {run_id}", "retrain the answer, bit for bit"),
        (f"satsweep train --from-run {run_id} key=value", "start from it, change one thing"),
    ):
        console.print(f"  {command}  # {why}", soft_wrap=True, highlight=False)


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
    return table


def print_verdict(verdict: Verdict, console: Console | None = None) -> None:
    """``satsweep reproduce``'s answer: versions that changed, then metric by metric."""
    console = console or Console()
    if verdict.versions:
        console.print(
            _plain_table("package versions differ", ("package", "logged", "now"), verdict.versions)
        )
    columns = ("metric", "logged", "reproduced", "difference")
    rows = list(verdict.table[list(columns)].itertuples(index=False))
    console.print(
        _plain_table(f"logged vs reproduced (tolerance {verdict.tolerance:g})", columns, rows)
    )
    console.print(f"confusion matrix: {'identical' if verdict.confusion_equal else 'DIFFERS'}")
    word = "reproduced" if verdict.matches else "NOT reproduced"
    console.print(
        f"{word}: max |difference| {verdict.max_difference:.3g}; new run {verdict.run_id}"
    )


def _panel(snap: Snapshot, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    total = snap.total if snap.total is not None else "?"
    if snap.total:
        table.add_row("progress", ProgressBar(total=snap.total, completed=snap.done, width=30))
    for label, value in (
        ("trials done", f"{snap.done}/{total}"),
        ("running", snap.running),
        ("pruned", snap.pruned),
        ("failed", snap.failed),
        ("best", snap.best),
        *(
            [("final fit", f"epoch {snap.final_fit.epoch}/{snap.final_fit.epochs}")]
            if snap.final_fit
            else []
        ),
        ("elapsed", f"{snap.elapsed:.0f}s"),
        ("remaining", f"~{snap.eta()}"),
    ):
        table.add_row(label, str(value))
    return table


class Progress:
    """Call :meth:`update` periodically; redraws on a terminal, prints on change elsewhere."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.title = title
        self.live: Live | None = None
        self.last_line = ""

    def __enter__(self) -> Progress:
        if self.console.is_terminal or self.console.is_jupyter:  # a notebook redraws too
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def update(self, snap: Snapshot) -> None:
        """Redraw the panel, or print a line when the counts changed (no terminal)."""
        if self.live is not None:
            self.live.update(_panel(snap, self.title))
            return
        line = snap.line()
        if line.split(" | ")[:2] != self.last_line.split(" | ")[:2]:
            print(f"{self.title}: {line}", file=self.console.file, flush=True)
        self.last_line = line

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
