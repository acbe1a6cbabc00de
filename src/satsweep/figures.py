"""Matplotlib figures of their own, as PNG bytes; image mosaics.

satsweep's figures are ``Figure`` objects made without pyplot: drawing one
never chooses or changes the process's backend (a notebook keeps its inline
one and shows them), and none joins pyplot's list of open figures, so none
piles up in a worker's memory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure


class ShownFigure(Figure):
    """A figure a notebook shows as an image: IPython asks for ``_repr_png_``.

    pyplot's figures show through the inline backend's hook, which a figure made
    without pyplot never reaches.
    """

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float],
    constrained_layout: bool = False,
    **options: Any,
) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``pyplot.subplots`` gives, without pyplot."""
    figure = ShownFigure(figsize=figsize, layout="constrained" if constrained_layout else None)
    return figure, figure.subplots(nrows, ncols, **options)


def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
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
