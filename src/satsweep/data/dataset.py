"""Load a data config into train/val/test arrays: the one entry point to data.

Listing, digesting, decoding (or reading the cache) and splitting happen here,
in that order, so training, EDA and reproduce all see exactly the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satsweep.data.cache import DecodedArrays, load_or_decode
from satsweep.data.catalog import Catalog, build_catalog
from satsweep.data.chips import CHIP_CLASSES, chips_digest, decode_chips
from satsweep.data.decode import decode_catalog, warn_skipped
from satsweep.data.download import ensure_dataset
from satsweep.data.splits import Split, stratified_split, training_share
from satsweep.errors import UserError
from satsweep.schema import DataConfig, RunConfig


@dataclass(frozen=True)
class Dataset:
    """A run's images, split into train, validation and test, with its class names and digest."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    digest: str
    from_cache: bool
    skipped: tuple[str, ...]
    catalog: Catalog | None  # the selected files; None for formats that are one file

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def is_binary(self) -> bool:
        """Two classes: binary metrics apply."""
        return self.num_classes == 2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every image."""
        height, width, channels = self.train.images.shape[1:]
        return int(height), int(width), int(channels)

    def splits(self) -> dict[str, Split]:
        """The splits by name, for loops over them."""
        return {"train": self.train, "val": self.val, "test": self.test}


def load_data(cfg: RunConfig) -> Dataset:
    """The dataset of a run, through the decode cache at ``paths.cache``."""
    return load_dataset(cfg.data, Path(cfg.paths.cache))


def load_dataset(cfg: DataConfig, cache_dir: Path) -> Dataset:
    """Decoded (or cached) and split data for ``cfg``."""
    if cfg.download is not None and cfg.download.enabled:
        ensure_dataset(cfg.download, Path(cfg.path))
    arrays, class_names, digest, from_cache, catalog = _decoded(cfg, cache_dir)
    if from_cache:
        warn_skipped(arrays.skipped)
    train, val, test = stratified_split(arrays.labels, cfg.split, class_names)
    train = training_share(train, arrays.labels, cfg.train_share, cfg.split.seed)
    return Dataset(
        name=cfg.name,
        class_names=class_names,
        train=_take(arrays, train),
        val=_take(arrays, val),
        test=_take(arrays, test),
        digest=digest,
        from_cache=from_cache,
        skipped=arrays.skipped,
        catalog=catalog,
    )


def _decoded(
    cfg: DataConfig, cache_dir: Path
) -> tuple[DecodedArrays, tuple[str, ...], str, bool, Catalog | None]:
    path = Path(cfg.path)
    if cfg.format == "shipsnet_json":
        if cfg.chip_size is None:
            raise UserError("data.chip_size is required for format shipsnet_json: e.g. 80")
        digest = chips_digest(path, cfg.name, cfg.source)
        chip_size = cfg.chip_size

        def decode() -> DecodedArrays:
            return decode_chips(path, chip_size, cfg.image_size)

        arrays, from_cache = load_or_decode(cache_dir, digest, cfg.image_size, decode)
        return arrays, CHIP_CLASSES, digest, from_cache, None
    catalog = build_catalog(cfg)
    digest = catalog.digest()
    arrays, from_cache = load_or_decode(
        cache_dir, digest, cfg.image_size, lambda: decode_catalog(catalog, cfg.image_size)
    )
    return arrays, catalog.class_names, digest, from_cache, catalog


def _take(arrays: DecodedArrays, indices: np.ndarray) -> Split:
    return Split(arrays.images[indices], arrays.labels[indices], arrays.sources[indices])
