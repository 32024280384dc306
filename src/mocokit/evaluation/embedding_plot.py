"""The picture of a 2-D feature map: one point per image, coloured by class, with a legend of class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mocokit.files import atomic_output

MAX_LEGEND_CLASSES = 30  # beyond this the legend would cover the map


def plot_feature_map(coords: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Write a PNG of `coords` (N×2) coloured by `labels` (N; -1 = unlabelled, drawn grey) with class names in the
    legend (up to MAX_LEGEND_CLASSES classes). Uses no pyplot state, so it is safe in any process."""
    figure = Figure(figsize=(7, 6), dpi=120)
    axes = figure.add_subplot()
    colours = _colours(len(classes))
    unlabelled = labels < 0
    if unlabelled.any():
        axes.scatter(*coords[unlabelled].T, s=4, c="0.6", label="unlabelled", linewidths=0)
    for index, name in enumerate(classes):
        chosen = labels == index
        if chosen.any():
            axes.scatter(*coords[chosen].T, s=4, color=colours[index], label=name, linewidths=0)
    if 0 < len(classes) <= MAX_LEGEND_CLASSES or (unlabelled.any() and not classes):
        axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, fontsize=8, frameon=False)
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    with atomic_output(path) as partial:  # whole or not at all
        figure.savefig(partial, format="png")
    return path


def _colours(count: int) -> np.ndarray:
    from matplotlib import colormaps

    if count <= 10:
        return colormaps["tab10"](np.arange(max(count, 1)))
    if count <= 20:
        return colormaps["tab20"](np.arange(count))
    return colormaps["turbo"](np.linspace(0, 1, count))
