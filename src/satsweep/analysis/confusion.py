"""Confusion-matrix figures and tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to files

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def confusion_table(confusion: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Rows are true classes, columns predicted classes."""
    return pd.DataFrame(confusion, index=list(class_names), columns=list(class_names))


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...]) -> Figure:
    """Counts (left) and row-normalised recall (right), side by side."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    n = len(class_names)
    side = max(4.0, 0.32 * n + 2.0)
    figure, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), constrained_layout=True)
    panels = ((confusion, "counts", "d"), (normalised, "row-normalised", ".2f"))
    for axis, (matrix, title, fmt) in zip(axes, panels, strict=True):
        image = axis.imshow(matrix, cmap="Blues")
        axis.set_title(f"Test confusion matrix ({title})")
        axis.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        axis.set_yticks(range(n), class_names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        if n <= 12:
            for (i, j), value in np.ndenumerate(matrix):
                axis.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7)
        figure.colorbar(image, ax=axis, shrink=0.7)
    return figure
