"""Exploratory data analysis: the dataset report the notebooks start with.

It reads the data through :func:`satsweep.data.load_dataset`, with the same
selection and split as training, so it describes exactly what a model sees:
class balance, sample images, channel statistics, what the files are on disk,
unreadable files, exact duplicates and leakage across the splits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from satsweep.data import Dataset
from satsweep.data.images import DECODE_ERRORS, inspect
from satsweep.figures import mosaic, subplots, tile_centres

MONTAGE_PER_CLASS = 6
CHANNELS = ("red", "green", "blue")


@dataclass
class EdaReport:
    """The dataset report: class balance, samples, channel statistics, duplicates and leakage."""

    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _all_images(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels, sources and split name of every sample, train first."""
    splits = dataset.splits()
    return (
        np.concatenate([s.images for s in splits.values()]),
        np.concatenate([s.labels for s in splits.values()]),
        np.concatenate([s.sources for s in splits.values()]),
        np.concatenate([[name] * len(s) for name, s in splits.items()]),
    )


def build_report(dataset: Dataset) -> EdaReport:
    """Look at the data before modelling: what is imbalanced, duplicated or leaked."""
    images, labels, sources, split_of = _all_images(dataset)
    report = EdaReport(f"Dataset report: {dataset.name} ({len(labels)} images)")
    _class_balance(report, labels, dataset.class_names)
    report.figures["montage.png"] = _montage(images, labels, dataset.class_names)
    _channel_statistics(report, images, labels, dataset.class_names)
    if dataset.catalog is not None:
        report.tables["inventory.csv"] = _inventory(list(dataset.catalog.sources))
    report.tables["unreadable_files.csv"] = pd.DataFrame({"path": list(dataset.skipped)})
    report.metrics["unreadable_files"] = float(len(dataset.skipped))
    hashes = _content_hashes(dataset, images, sources)
    _duplicates_and_leakage(report, hashes, sources, labels, split_of, dataset.class_names)
    return report


def _class_balance(report: EdaReport, labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    table = pd.DataFrame({"class": class_names, "count": counts})
    report.tables["class_counts.csv"] = table
    report.metrics.update(
        images=float(counts.sum()),
        classes=float(len(class_names)),
        imbalance_ratio=float(counts.max() / max(1, counts.min())),
    )
    figure, axis = subplots(figsize=(max(6.0, 0.3 * len(class_names) + 2), 4))
    axis.bar(class_names, counts)
    axis.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    axis.set_title(f"Images per class (imbalance ratio {report.metrics['imbalance_ratio']:.2f})")
    figure.tight_layout()
    report.figures["class_counts.png"] = figure


def _montage(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> Figure:
    rng = np.random.default_rng(0)
    rows, columns = len(class_names), MONTAGE_PER_CLASS
    chosen = [
        images[rng.choice(members, size=min(columns, len(members)), replace=False)]
        for members in (np.flatnonzero(labels == row) for row in range(rows))
    ]
    gap = max(1, images.shape[1] // 16)
    figure, axis = subplots(figsize=(1.1 * columns + 1.5, 1.1 * rows))
    axis.imshow(mosaic(chosen, columns, (gap, gap)))
    axis.set_xticks([])
    axis.set_yticks(tile_centres(rows, images.shape[1], gap), class_names, fontsize=7)
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    height = figure.get_figheight()  # margins in inches: a fixed fraction leaves bands
    figure.suptitle("Sample images per class", y=1 - 0.08 / height, va="top")
    figure.subplots_adjust(top=1 - 0.45 / height, bottom=0.1 / height)
    return figure


def _channel_statistics(
    report: EdaReport, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> None:
    pixels = images.reshape(len(images), -1, 3).astype(np.float64)
    per_image_mean = pixels.mean(axis=1)
    rows = [_stats_row("all", pixels)]
    rows += [_stats_row(name, pixels[labels == i]) for i, name in enumerate(class_names)]
    report.tables["channel_stats.csv"] = pd.DataFrame(rows)
    figure, axes = subplots(1, 3, figsize=(12, 3.2))
    for channel, (axis, name) in enumerate(zip(axes, CHANNELS, strict=True)):
        axis.hist(images[..., channel].ravel(), bins=64, color=name, alpha=0.8)
        axis.set_title(f"{name}: mean {per_image_mean[:, channel].mean():.1f}")
    figure.suptitle("Pixel value histograms (0-255)")
    figure.tight_layout()
    report.figures["channel_histograms.png"] = figure


def _stats_row(name: str, pixels: np.ndarray) -> dict[str, float | str]:
    flat = pixels.reshape(-1, 3)
    row: dict[str, float | str] = {"class": name}
    for channel, label in enumerate(CHANNELS):
        row[f"{label}_mean"] = round(float(flat[:, channel].mean()), 2)
        row[f"{label}_std"] = round(float(flat[:, channel].std()), 2)
    return row


def _inventory(paths: list[str]) -> pd.DataFrame:
    """Sizes, modes and bit depths as stored on disk, before any conversion."""

    def describe(path: str) -> tuple[str, str, int]:
        try:
            info = inspect(Path(path))
        except DECODE_ERRORS:
            return "unreadable", "unreadable", 0
        return f"{info.width}x{info.height}", info.mode, info.bits

    with ThreadPoolExecutor() as pool:
        rows = list(pool.map(describe, paths))
    table = pd.DataFrame(rows, columns=["size", "mode", "bits"])
    table["format"] = [Path(p).suffix.lower() for p in paths]
    return table.value_counts().rename("files").reset_index()


def _content_hashes(dataset: Dataset, images: np.ndarray, sources: np.ndarray) -> list[str]:
    """File hashes where there are files; hashes of the decoded pixels otherwise."""
    if dataset.catalog is not None:
        by_source = dict(zip(dataset.catalog.sources, dataset.catalog.file_hashes, strict=True))
        return [by_source[str(s)] for s in sources]
    return [hashlib.sha256(image.tobytes()).hexdigest() for image in images]


def _duplicates_and_leakage(
    report: EdaReport,
    hashes: list[str],
    sources: np.ndarray,
    labels: np.ndarray,
    split_of: np.ndarray,
    class_names: tuple[str, ...],
) -> None:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, digest in enumerate(hashes):
        groups[digest].append(index)
    duplicate_rows, leak_rows = [], []
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        classes = sorted({class_names[labels[i]] for i in members})
        splits = sorted({str(split_of[i]) for i in members})
        duplicate_rows.append(
            {
                "sha256": digest[:16],
                "copies": len(members),
                "where": "across classes" if len(classes) > 1 else "within a class",
                "classes": ", ".join(classes),
                "files": " | ".join(str(sources[i]) for i in members),
            }
        )
        if len(splits) > 1:
            leak_rows.append(
                {
                    "sha256": digest[:16],
                    "splits": ", ".join(splits),
                    "files": " | ".join(str(sources[i]) for i in members),
                }
            )
    report.tables["duplicates.csv"] = pd.DataFrame(
        duplicate_rows, columns=["sha256", "copies", "where", "classes", "files"]
    )
    report.tables["leakage.csv"] = pd.DataFrame(leak_rows, columns=["sha256", "splits", "files"])
    report.metrics["duplicate_groups"] = float(len(duplicate_rows))
    report.metrics["leaked_images"] = float(len(leak_rows))
