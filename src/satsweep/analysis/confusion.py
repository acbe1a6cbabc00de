"""Confusion-matrix figures and tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from satsweep.figures import subplots

SIDE_BY_SIDE_CLASSES = 12  # more classes get one panel, large enough to read


def confusion_table(confusion: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Rows are true classes, columns predicted classes."""
    return pd.DataFrame(confusion, index=list(class_names), columns=list(class_names))


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...]) -> Figure:
    """Counts and row-normalised recall side by side; recall alone for many classes.

    With 30 classes two panels shrink the labels below legibility in the MLflow
    UI's preview, so past ``SIDE_BY_SIDE_CLASSES`` one large panel shows recall
    in percent (the counts stay in ``confusion_matrix.csv``).
    """
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    n = len(class_names)
    if n <= SIDE_BY_SIDE_CLASSES:
        panels = [(confusion, "counts", "d"), (normalised, "row-normalised", ".2f")]
    else:
        panels = [(normalised * 100, "recall per true class, %", ".0f")]
    side = max(4.0, 0.3 * n + 2.5)
    figure, axes = subplots(
        1, len(panels), figsize=(len(panels) * side + 1, side), constrained_layout=True
    )
    for axis, (matrix, title, fmt) in zip(np.atleast_1d(axes), panels, strict=True):
        image = axis.imshow(matrix, cmap="Blues")
        axis.set_title(f"Test confusion matrix ({title})", fontsize=11)
        axis.set_xticks(range(n), class_names, rotation=90, fontsize=9)
        axis.set_yticks(range(n), class_names, fontsize=9)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for (i, j), value in np.ndenumerate(matrix):
            if n <= SIDE_BY_SIDE_CLASSES or value >= 0.5:  # many classes: non-zero cells only
                dark = value > 0.6 * matrix.max()
                axis.text(
                    j,
                    i,
                    format(value, fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
        figure.colorbar(image, ax=axis, shrink=0.7)
    return figure
