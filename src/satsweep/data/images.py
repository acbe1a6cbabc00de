"""Decode one image file into an RGB ``uint8`` array of a fixed size.

Satellite chips come as 8-bit RGB JPEGs, but also as grayscale, palette, RGBA or
16-bit PNG/TIFF. Every one is converted the same way here, so the rest of
satsweep only ever sees ``(size, size, 3)`` ``uint8`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
# DecompressionBombError: a header claiming more pixels than PIL will allocate.
DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageInfo:
    """What a file looks like on disk, before conversion (for the EDA inventory)."""

    width: int
    height: int
    mode: str
    bits: int


def is_image(path: Path) -> bool:
    """Whether a file's suffix is one PIL reads as an image."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; 16-bit and float images are rescaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode(path: Path, size: int) -> np.ndarray:
    """Read ``path`` as a ``(size, size, 3)`` ``uint8`` array; raises one of DECODE_ERRORS."""
    with Image.open(path) as image:
        image.load()
        rgb = to_rgb8(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


def inspect(path: Path) -> ImageInfo:
    """Size, mode and bit depth as stored, without a full decode."""
    with Image.open(path) as image:
        bits = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(image.mode, 8)
        return ImageInfo(image.width, image.height, image.mode, bits)
