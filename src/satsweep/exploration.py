"""``satsweep eda``: the dataset report, as an HTML file and an MLflow run.

Also logs the same report into a sweep's parent run, once per sweep.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from satsweep.analysis.eda import EdaReport, build_report
from satsweep.analysis.html import image_tag, page, table_tag, text_tag
from satsweep.config import load_run_config
from satsweep.data import Dataset, load_data
from satsweep.figures import figure_png
from satsweep.redact import redact_tree
from satsweep.schema import RunConfig, as_plain
from satsweep.tracking import TAG_PREFIX, Tracker, flatten

EDA_EXPERIMENT = "eda"
SECTIONS = (
    ("Class balance", ["class_counts.png", "class_counts.csv"]),
    ("Sample images", ["montage.png"]),
    ("Channel statistics (0-255)", ["channel_stats.csv", "channel_histograms.png"]),
    ("Files on disk: sizes, modes, bit depths", ["inventory.csv"]),
    ("Unreadable or corrupt files", ["unreadable_files.csv"]),
    ("Exact duplicates (same content hash)", ["duplicates.csv"]),
    ("Leakage: the same image in two splits", ["leakage.csv"]),
)


@dataclass(frozen=True)
class EdaResult:
    """The report (figures and tables, to show in a notebook), its HTML file, its run."""

    report: EdaReport
    html_path: Path
    run_id: str

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{name}</td><td>{value:g}</td></tr>"
            for name, value in self.report.metrics.items()
        )
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.report.notes)
        return (
            f"<p>{html.escape(self.report.title)}: MLflow run {self.run_id}, "
            f"report in {html.escape(str(self.html_path))}</p>"
            f"<table>{rows}</table>" + (f"<ul>{notes}</ul>" if notes else "")
        )


def render(report: EdaReport, pngs: dict[str, bytes]) -> str:
    """The EDA report as one HTML page, its figures inline."""
    summary = ", ".join(f"{k.replace('_', ' ')}: {v:g}" for k, v in report.metrics.items())
    sections: list[tuple[str, list[str]]] = [("Summary", [text_tag(summary)])]
    for heading, names in SECTIONS:
        fragments = []
        for name in names:
            if name in pngs:
                fragments.append(image_tag(pngs[name], name))
            elif name in report.tables:
                fragments.append(table_tag(report.tables[name]))
        if fragments:
            sections.append((heading, fragments))
    return page(report.title, sections)


def log_report(
    tracker: Tracker,
    run_id: str,
    report: EdaReport,
    html: str,
    pngs: dict[str, bytes],
    folder: str = "",
) -> None:
    """Log the EDA report's metrics, figures and HTML to a run."""
    prefix = f"{folder}/" if folder else ""
    tracker.log_text(run_id, html, f"{prefix}eda_report.html")
    for name, png in pngs.items():
        tracker.log_bytes(run_id, png, f"{prefix}{name}")
    for name, table in report.tables.items():
        tracker.log_text(run_id, table.to_csv(index=False), f"{prefix}{name}")


def report_for(dataset: Dataset) -> tuple[EdaReport, dict[str, bytes], str]:
    """Build the EDA report of a loaded dataset."""
    report = build_report(dataset)
    pngs = {name: figure_png(figure) for name, figure in report.figures.items()}
    return report, pngs, render(report, pngs)


def log_dataset_report(tracker: Tracker, run_id: str, dataset: Dataset) -> None:
    """The EDA report inside another run (a sweep's parent), under ``eda/``."""
    report, pngs, html = report_for(dataset)
    log_report(tracker, run_id, report, html, pngs, folder="eda")
    tracker.log_metrics(run_id, {f"eda_{k}": v for k, v in report.metrics.items()}, step=0)


def run_eda(overrides: Sequence[str]) -> EdaResult:
    """``satsweep eda``: load the data a run would see, report on it, log it to MLflow."""
    cfg: RunConfig = load_run_config(overrides)
    tracker = Tracker(cfg.tracking)
    tracker.check_reachable()
    dataset = load_data(cfg)
    report, pngs, html = report_for(dataset)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset.name)
    html_path = Path(cfg.paths.outputs) / "eda" / f"{safe_name}-{dataset.digest[:12]}.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(html)
    run_id = tracker.create_run(
        tracker.experiment_id(EDA_EXPERIMENT),
        f"eda-{dataset.name}",
        tags={f"{TAG_PREFIX}data_digest": dataset.digest, f"{TAG_PREFIX}data": dataset.name},
    )
    try:
        tracker.log_params(run_id, flatten({"data": redact_tree(as_plain(cfg.data))}))
        tracker.log_metrics(run_id, report.metrics, step=0)
        log_report(tracker, run_id, report, html, pngs)
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id)
    return EdaResult(report, html_path, run_id)
