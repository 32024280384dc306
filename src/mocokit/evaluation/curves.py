"""The transfer plot: learning curves of fine-tuning runs side by side (test top-1 and training loss per epoch),
drawn on matplotlib's Agg canvas (no pyplot, no display, no global backend switch)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from mocokit.evaluation.finetune import Curve


def plot_learning_curves(curves: dict[str, Curve], title: str, path: Path) -> Path:
    """A PNG with two panels, test top-1 and training loss against the epoch, one line per label; each label in the
    legend carries its final top-1. Returns `path`."""
    with matplotlib.rc_context({"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                                "axes.spines.right": False}):
        figure = Figure(figsize=(10, 4))
        FigureCanvasAgg(figure)
        accuracy_ax, loss_ax = figure.subplots(1, 2)
        for label, curve in curves.items():
            final = f" (final {100 * curve.test_top1[-1]:.1f}%)" if curve.test_top1 else ""
            accuracy_ax.plot(curve.epochs, [100 * v for v in curve.test_top1], marker="o", label=label + final)
            loss_ax.plot(curve.epochs, curve.train_loss, marker="o", label=label)
        accuracy_ax.set(title="test top-1", xlabel="epoch")
        accuracy_ax.yaxis.set_major_formatter(PercentFormatter())
        loss_ax.set(title="training loss", xlabel="epoch")
        for ax in (accuracy_ax, loss_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend()
        figure.suptitle(title)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    return path
