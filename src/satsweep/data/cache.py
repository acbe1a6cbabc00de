"""Decoded arrays, cached on disk so that a dataset is decoded once.

The cache key is the data digest (file list and contents) plus the image size, so
a changed file or a new size decodes again and nothing stale is ever read. Files
are written atomically: parallel workers may race to fill the same entry.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satsweep.errors import UserError
from satsweep.files import atomic_file

LOG = logging.getLogger(__name__)
# Bump when decoding changes, so old entries are not reused (2: EXIF orientation, nodata).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DecodedArrays:
    """Images as ``(N, H, W, 3) uint8`` with their labels and where each came from."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    skipped: tuple[str, ...]


def cache_path(cache_dir: Path, digest: str, image_size: int) -> Path:
    """The cache file of one dataset selection (by digest) at one image size."""
    return cache_dir / f"v{FORMAT_VERSION}-{digest[:24]}-{image_size}px.npz"


def load_or_decode(
    cache_dir: Path, digest: str, image_size: int, decode: Callable[[], DecodedArrays]
) -> tuple[DecodedArrays, bool]:
    """The cached arrays for this digest and size, decoding (and caching) them on a miss.

    Returns the arrays and whether they came from the cache.
    """
    path = cache_path(cache_dir, digest, image_size)
    started = time.perf_counter()
    cached = _read(path) if path.is_file() else None
    if cached is not None:
        LOG.info(
            "loaded %d images from cache %s in %.2fs",
            len(cached.labels),
            path.name,
            time.perf_counter() - started,
        )
        return cached, True
    arrays = decode()
    _save_atomically(path, arrays)
    LOG.info(
        "decoded %d images in %.2fs; cached as %s",
        len(arrays.labels),
        time.perf_counter() - started,
        path.name,
    )
    return arrays, False


def _read(path: Path) -> DecodedArrays | None:
    """The arrays in ``path``, or None (with a warning) when the file is damaged.

    Writes are atomic, but a full disk or a copied-in file can still leave a
    truncated entry; decoding again is always possible, failing every run is not.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            return DecodedArrays(
                stored["images"],
                stored["labels"],
                stored["sources"],
                tuple(str(s) for s in stored["skipped"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        LOG.warning("cache file %s is damaged (%s): decoding the images again", path, error)
        return None


def _save_atomically(path: Path, arrays: DecodedArrays) -> None:
    try:
        with atomic_file(path) as stream:
            np.savez(
                stream,
                images=arrays.images,
                labels=arrays.labels,
                sources=arrays.sources,
                skipped=np.asarray(arrays.skipped, dtype=str),
            )
    except OSError as error:  # read-only, or a full disk
        raise UserError(
            f"cannot write the decode cache in {path.parent} ({error.strerror}): "
            "set paths.cache to a writable folder"
        ) from error
