"""Stratified train/validation/test splits from a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from satsweep.errors import UserError
from satsweep.schema import SplitConfig


@dataclass(frozen=True)
class Split:
    """One split: ``images[i]`` (uint8, NHWC) has class index ``labels[i]``."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def stratified_split(
    labels: np.ndarray, cfg: SplitConfig, class_names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays for train, val and test, each holding every class."""
    _check_enough_per_class(labels, class_names)
    indices = np.arange(len(labels))
    try:
        train, rest = train_test_split(
            indices, train_size=cfg.train, stratify=labels, random_state=cfg.seed
        )
        val, test = train_test_split(
            rest,
            train_size=cfg.val / (cfg.val + cfg.test),
            stratify=labels[rest],
            random_state=cfg.seed,
        )
    except ValueError as error:  # too few images of a class, or too many classes, for a split
        raise UserError(_unsplittable(labels, cfg, class_names)) from error
    for name, part in (("train", train), ("val", val), ("test", test)):
        missing = set(range(len(class_names))) - set(labels[part].tolist())
        if missing:
            raise UserError(
                f"the {name} split has no example of class {class_names[min(missing)]!r}: "
                "add images of it, raise data.max_per_class or change data.split"
            )
    return np.sort(train), np.sort(val), np.sort(test)


def training_share(train: np.ndarray, labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The ``share`` of the training indices a run trains on: per class, at least one each.

    Only the training split shrinks, so a search at a low share is judged on the same
    validation (and test) images as its final fit at the full share. The draw is
    seeded, and nested: a larger share keeps every image a smaller one kept.
    """
    if share >= 1.0:
        return train
    rng = np.random.default_rng(seed)
    kept = [
        rng.permutation(members)[: max(1, math.ceil(share * len(members)))]
        for members in (train[labels[train] == label] for label in np.unique(labels[train]))
    ]
    return np.sort(np.concatenate(kept))


def _check_enough_per_class(labels: np.ndarray, class_names: tuple[str, ...]) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    smallest = int(np.argmin(counts))
    if counts[smallest] < 3:
        raise UserError(
            f"class {class_names[smallest]!r} has {counts[smallest]} readable image(s): "
            "each class needs at least 3 (one per split)"
        )


def _unsplittable(labels: np.ndarray, cfg: SplitConfig, class_names: tuple[str, ...]) -> str:
    counts = np.bincount(labels, minlength=len(class_names))
    smallest = int(np.argmin(counts))
    return (
        f"cannot split {len(labels)} images of {len(class_names)} classes (the smallest, "
        f"{class_names[smallest]!r}, has {counts[smallest]}) into data.split train={cfg.train} "
        f"val={cfg.val} test={cfg.test} with every class in every split: use more images per "
        "class (data.max_per_class), fewer classes (data.classes) or less extreme data.split"
    )
