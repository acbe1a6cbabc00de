"""ShipsNet / PlanesNet JSON: ``{"data": [flattened chips], "labels": [0 or 1]}``.

Each chip is stored channel-first and flattened: all red values, then green, then
blue, each ``chip_size * chip_size`` long.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from satsweep.data.cache import DecodedArrays
from satsweep.data.catalog import missing_dataset
from satsweep.errors import UserError

CHIP_CLASSES = ("negative", "positive")


def chips_digest(path: Path, data_name: str, source: str | None) -> str:
    """The digest of a chips JSON file's content, so a changed file is decoded again."""
    if not path.is_file():
        raise missing_dataset(path, data_name, source)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _pixels(values: np.ndarray, path: Path) -> np.ndarray:
    """Chip values as 8-bit pixels; anything else would train on wrong images silently."""
    if values.dtype.kind not in "iu" or (values.size and (values.min() < 0 or values.max() > 255)):
        low, high = (values.min(), values.max()) if values.size else (0, 0)
        kind = "fractions" if values.dtype.kind == "f" and high <= 1.0 else "values"
        raise UserError(
            f"{path}: chip values must be whole numbers 0..255, found {kind} from {low} to "
            f"{high}: rescale the file to 8-bit pixel values (0..1 fractions times 255)"
        )
    return values.astype(np.uint8)


def decode_chips(path: Path, chip_size: int, image_size: int) -> DecodedArrays:
    """Decode a ShipsNet-style JSON of flat RGB chips into images and labels."""
    try:
        payload = json.loads(path.read_text())
        values = np.asarray(payload["data"])
        labels = np.asarray(payload["labels"], dtype=np.int64)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not ShipsNet/PlanesNet JSON ({error}): expected "
            '{"data": [[...], ...], "labels": [...]}'
        ) from error
    flat = _pixels(values, path)
    expected = 3 * chip_size * chip_size
    if flat.ndim != 2 or flat.shape[1] != expected or len(flat) != len(labels):
        raise UserError(
            f"{path}: chips have {flat.shape[-1] if flat.ndim == 2 else '?'} values, expected "
            f"{expected} for data.chip_size={chip_size}: set data.chip_size to the chip width"
        )
    if not set(np.unique(labels)) <= {0, 1}:
        raise UserError(f"{path}: labels must be 0 or 1, found {sorted(set(labels.tolist()))}")
    images = flat.reshape(-1, 3, chip_size, chip_size).transpose(0, 2, 3, 1)
    if image_size != chip_size:
        images = np.stack(
            [np.asarray(Image.fromarray(chip).resize((image_size, image_size))) for chip in images]
        )
    sources = np.asarray([f"{path.name}#{i}" for i in range(len(labels))], dtype=str)
    return DecodedArrays(np.ascontiguousarray(images), labels, sources, ())
