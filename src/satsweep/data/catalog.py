"""Which samples a run uses, before any pixel is decoded.

A :class:`Catalog` lists the samples (file paths and class labels) that a data
config selects: the class folders, an optional subset of classes, a per-class cap,
and the one-vs-rest relabelling of binary tasks. Its digest, over every selected
file's content, identifies the data of a run: a changed pixel changes it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from satsweep.data.images import is_image
from satsweep.errors import MissingDataset, UserError
from satsweep.schema import DataConfig

LOG = logging.getLogger(__name__)

NEGATIVE_CLASS = "other"
# Folder names of a dataset shipped as splits: class folders are one level below them.
SPLIT_FOLDERS = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


@dataclass(frozen=True)
class Catalog:
    """Selected samples: ``sources[i]`` is a file whose class index is ``labels[i]``."""

    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    labels: np.ndarray
    root: Path

    @cached_property
    def file_hashes(self) -> tuple[str, ...]:
        """SHA-256 of each selected file's content (computed once, shared with EDA)."""
        with ThreadPoolExecutor() as pool:
            return tuple(pool.map(_file_sha256, self.sources))

    def digest(self) -> str:
        """SHA-256 over every selected file's relative path, class and content."""
        total = hashlib.sha256()
        for source, label, content in zip(self.sources, self.labels, self.file_hashes, strict=True):
            relative = Path(source).relative_to(self.root).as_posix()
            total.update(f"{relative}\0{self.class_names[label]}\0{content}\n".encode())
        return total.hexdigest()


def _file_sha256(path: str) -> str:
    """The file's SHA-256; "unreadable" for a file that cannot be opened (decoding skips it)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return "unreadable"


def missing_dataset(path: Path, data_name: str, source: str | None) -> MissingDataset:
    """What to do when a dataset is missing: where satsweep looked, and where to get it."""
    return MissingDataset(
        f"dataset {data_name!r} not found: looked in {path}. {source or 'Put the data there'}; "
        "or set SATSWEEP_DATA_DIR to the folder holding it, or pass data.path=DIR",
        data_name,
    )


def class_folders(root: Path, data_name: str, source: str | None) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every sub-folder of ``root``."""
    if root.is_file():
        raise UserError(
            f"data.path {root} is a file, not a folder: pass the folder that holds "
            "one sub-folder per class"
        )
    if not root.is_dir():
        raise missing_dataset(root, data_name, source)
    entries = [e for e in sorted(root.iterdir()) if e.is_dir() and not e.name.startswith(".")]
    links = [e.name for e in entries if e.is_symlink()]
    if links:  # usually a second name for a class folder: its images would count twice
        LOG.warning("skipping %d linked folder(s) in %s: %s", len(links), root, ", ".join(links))
    folders = {entry.name: _images(entry) for entry in entries if not entry.is_symlink()}
    if not folders:
        raise UserError(f"no class folders in {root}: expected {root}/<ClassName>/<image files>")
    _refuse_split_layout(root, folders)
    return folders


def _refuse_split_layout(root: Path, folders: dict[str, list[Path]]) -> None:
    """``train/`` and ``test/`` are splits, not classes: learning "train against test" is wrong."""
    if not folders.keys() or not {name.lower() for name in folders} <= SPLIT_FOLDERS:
        return
    nested = [
        name for name, files in folders.items() if any(f.parent.parent != root for f in files)
    ]
    if nested:
        raise UserError(
            f"data.path {root} holds the splits {', '.join(folders)}, not classes: satsweep "
            f"makes its own stratified split (data.split); pass data.path={root / nested[0]} "
            "or merge the splits' class folders into one folder"
        )


def _images(folder: Path) -> list[Path]:
    """The image files under a class folder, with names that print (UTF-8)."""
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))
    except PermissionError as error:
        raise UserError(
            f"class folder {folder} cannot be read ({error.strerror}): fix its permissions "
            "or list the other classes in data.classes"
        ) from error
    odd = [p for p in files if not _printable(p.name)]
    if odd:
        LOG.warning("skipping %d file(s) whose names are not UTF-8 in %s", len(odd), folder)
    return [p for p in files if _printable(p.name)]


def _printable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes that are not UTF-8
        return False
    return True


def per_class_cap(max_per_class: int | None, max_images: int | None, classes: int) -> int | None:
    """The images kept per class: ``max_per_class``, or ``max_images`` shared out, the lower."""
    shares = [] if max_images is None else [math.ceil(max_images / classes)]
    caps = [cap for cap in (max_per_class, *shares) if cap is not None]
    return min(caps) if caps else None


def build_catalog(cfg: DataConfig) -> Catalog:
    """Select the samples of a class-per-folder dataset as ``cfg`` asks."""
    root = Path(cfg.path)
    folders = class_folders(root, cfg.name, cfg.source)
    _check_class_names(cfg.classes or [], folders, "data.classes")
    _check_class_names(cfg.positive_classes or [], folders, "data.positive_classes")
    chosen = list(cfg.classes) if cfg.classes else list(folders)
    if cfg.positive_classes:
        chosen = list(dict.fromkeys([*chosen, *cfg.positive_classes]))
    for name in chosen:
        if not folders[name]:
            raise UserError(
                f"class folder {root / name} holds no images: add images or leave it out with "
                "data.classes=[...]"
            )
    rng = np.random.default_rng(cfg.split.seed)
    cap = per_class_cap(cfg.max_per_class, cfg.max_images, len(chosen))
    files = {name: _cap(folders[name], cap, rng) for name in chosen}
    if cfg.positive_classes:
        return _one_vs_rest(root, files, cfg.positive_classes, cfg.negative_ratio, rng)
    if len(chosen) < 2:
        raise UserError(
            f"dataset {root} has only the class {chosen[0]!r}: a classifier needs at least two"
        )
    sources = [str(path) for name in chosen for path in files[name]]
    labels = [index for index, name in enumerate(chosen) for _ in files[name]]
    return Catalog(tuple(chosen), tuple(sources), np.asarray(labels, dtype=np.int64), root)


def _check_class_names(names: Sequence[str], folders: dict[str, list[Path]], key: str) -> None:
    unknown = [name for name in names if name not in folders]
    if unknown:
        raise UserError(
            f"unknown class {unknown[0]!r} in {key}: the classes are {', '.join(folders)}"
        )


def _cap(paths: list[Path], limit: int | None, rng: np.random.Generator) -> list[Path]:
    """At most ``limit`` paths, a seeded random subset kept in sorted order."""
    if limit is None or len(paths) <= limit:
        return paths
    keep = np.sort(rng.choice(len(paths), size=limit, replace=False))
    return [paths[i] for i in keep]


def _one_vs_rest(
    root: Path,
    files: dict[str, list[Path]],
    positive_classes: Sequence[str],
    negative_ratio: float | None,
    rng: np.random.Generator,
) -> Catalog:
    """Relabel to ``[other, positive]``; keep ``negative_ratio`` negatives per positive."""
    positives = [p for name in positive_classes for p in files[name]]
    negatives = [p for name, paths in files.items() if name not in positive_classes for p in paths]
    if not negatives:
        raise UserError(
            "data.positive_classes covers every selected class: no negative examples are left; "
            "widen data.classes or narrow data.positive_classes"
        )
    if negative_ratio is not None:
        negatives = _cap(negatives, max(1, round(negative_ratio * len(positives))), rng)
    positive_name = "+".join(positive_classes)
    # a two-folder set (damage / no_damage) keeps its own name for the negatives
    negative_folders = [name for name in files if name not in positive_classes]
    negative_name = negative_folders[0] if len(negative_folders) == 1 else NEGATIVE_CLASS
    sources = [str(p) for p in negatives] + [str(p) for p in positives]
    labels = np.asarray([0] * len(negatives) + [1] * len(positives), dtype=np.int64)
    return Catalog((negative_name, positive_name), tuple(sources), labels, root)
