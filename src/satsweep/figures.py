"""Matplotlib figures as PNG bytes (headless), closed once rendered; image mosaics."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # figures are only ever written to files

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it, so figures never pile up in memory."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def mosaic(rows: Sequence[np.ndarray], columns: int, gap: tuple[int, int]) -> np.ndarray:
    """Rows of images tiled into one image on white, for a single ``imshow``.

    A subplot per image costs milliseconds to build and draw: a 30-class montage
    of 180 subplots took seconds, beside a sweep's first trial. ``rows`` are
    arrays of at most ``columns`` same-sized images; ``gap`` is the white space
    between rows and between columns, in pixels.
    """
    first = next((row for row in rows if len(row)), None)
    if first is None:
        raise ValueError("mosaic of no image")
    height, width = first.shape[1:3]
    row_gap, column_gap = gap
    white = 255 if first.dtype == np.uint8 else 1.0
    tiles = np.full(
        (
            len(rows) * (height + row_gap) - row_gap,
            columns * (width + column_gap) - column_gap,
            *first.shape[3:],
        ),
        white,
        dtype=first.dtype,
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row[:columns]):
            top, left = r * (height + row_gap), c * (width + column_gap)
            tiles[top : top + height, left : left + width] = image
    return tiles


def tile_centres(count: int, size: int, gap: int) -> np.ndarray:
    """The centre of each of ``count`` tiles of ``size`` pixels along one axis of a mosaic."""
    return np.arange(count) * (size + gap) + (size - 1) / 2
