"""Decode one image file into an RGB ``uint8`` array of a fixed size.

Satellite chips come as 8-bit RGB JPEGs, but also as grayscale, palette, RGBA,
CMYK, 16-bit or float PNG/TIFF. Every one is converted the same way here, so the
rest of satsweep only ever sees ``(size, size, 3)`` ``uint8`` arrays:

- 16-bit, 32-bit and float pixels are stretched from the image's own minimum to
  its maximum (a sensor's 12 bits in a 16-bit file would be nearly black if
  divided by 65535);
- nodata pixels of float images (NaN, infinities, common in GeoTIFFs) are left
  out of that stretch and set to black, and the caller is told how many there
  were; an image with no valid pixel cannot be read;
- transparency (RGBA, LA, PA, palettes with a transparent index) is composited on
  black, CMYK goes through PIL's conversion, and an EXIF orientation is applied
  as a viewer would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


@dataclass(frozen=True)
class Decoded:
    """One decoded image, and how many of its pixels were nodata (NaN or infinite)."""

    pixels: np.ndarray  # (size, size, 3) uint8
    nodata: int


def to_rgb8(image: Image.Image) -> tuple[Image.Image, int]:
    """Convert any PIL mode to 8-bit RGB, and count the nodata pixels (see the module)."""
    nodata = 0
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        valid = np.isfinite(array)
        nodata = int(array.size - valid.sum())
        if nodata == array.size:
            raise ValueError("no valid pixel: every pixel is NaN or infinite")
        low, high = float(array[valid].min()), float(array[valid].max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(np.where(valid, scaled, 0.0).round().astype(np.uint8), mode="L")
    return _rgb(image), nodata


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode(path: Path, size: int) -> Decoded:
    """Read ``path`` as a ``(size, size, 3)`` ``uint8`` array; raises one of DECODE_ERRORS."""
    with Image.open(path) as image:
        image.load()
        rgb, nodata = to_rgb8(ImageOps.exif_transpose(image))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return Decoded(np.asarray(rgb, dtype=np.uint8), nodata)


def inspect(path: Path) -> ImageInfo:
    """Size, mode and bit depth as stored, without a full decode."""
    with Image.open(path) as image:
        bits = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(image.mode, 8)
        return ImageInfo(image.width, image.height, image.mode, bits)
