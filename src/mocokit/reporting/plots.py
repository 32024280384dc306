"""The run folder's `plots/`: PNG curves drawn from `metrics.jsonl` with matplotlib's Agg canvas.

Figures are built as `matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot, so no display
is needed, no global backend is switched and no figure outlives its function.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from mocokit.reporting.metrics import METRICS_FILE, Metrics, read_metrics
from mocokit.reporting.spikes import find_dips, find_spikes
from mocokit.reporting.summary import baseline_start, given_init

PLOTS_DIR = "plots"
DPI = 110
STYLE = {  # applied while drawing (matplotlib.rc_context), so the user's own rcParams are left alone
    "font.size": 11, "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
    "legend.fontsize": 9,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
}
SPIKE_WINDOW, SPIKE_FACTOR = 20, 5.0  # a gradient norm > 5× the median of the previous 20 logged values
DIP_WINDOW, DIP_FACTOR = 3, 1.05  # a kNN top-1 more than ~5% below the median of the previous 3 measurements
MAX_CYCLE_COLOURS = 10  # more layers than this: colours from a colormap instead of the default cycle
FEW_POINTS = 30  # a curve with at most this many points also gets markers: one or two points draw no visible line
SPIKE_HISTORY = 3  # `find_spikes`' min_history: a point needs this many earlier ones before it can be a spike


def _number(value: Any) -> float:
    """A float for numbers (NaN and infinity included); NaN for a missing or non-numeric value, which
    matplotlib leaves as a gap."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _logged(value: Any) -> float | None:
    """A float for numbers (NaN and infinity included); None for a missing or non-numeric value, so that a
    value logged as NaN (a divergence) can be told apart from one not logged."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _column(records: list[dict[str, Any]], key: str,
            x: str = "step") -> tuple[list[float], list[float | None]]:
    """(x values, `key` values) over the records that have a finite numeric x; missing values are None."""
    xs, ys = [], []
    for record in records:
        position = _number(record.get(x))
        if math.isfinite(position):
            xs.append(position)
            ys.append(_logged(record.get(key)))
    return xs, ys


def _drawable(values: list[float | None], scale: float = 1.0, positive: bool = False) -> list[float]:
    """Values ready for `plot`: missing and non-finite ones (and non-positive ones for a log axis) become NaN,
    which matplotlib leaves as gaps."""
    return [v * scale if v is not None and math.isfinite(v) and (v > 0 or not positive) else math.nan
            for v in values]


def _nonfinite_at(xs: list[float], values: list[float | None]) -> list[float]:
    """The x positions where a value was logged but is NaN or infinite."""
    return [x for x, v in zip(xs, values, strict=True) if v is not None and not math.isfinite(v)]


def _has_finite(values: list[float | None]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)


def _steps_per_epoch(metrics: Metrics) -> float | None:
    """Steps in one epoch, from epoch records (step / epoch) or else step records' fractional epoch."""
    for kind in ("epoch", "step"):
        ratios = [s / e for r in metrics.get(kind, [])
                  if math.isfinite(s := _number(r.get("step")))
                  and math.isfinite(e := _number(r.get("epoch"))) and e > 0]
        if ratios:
            return statistics.median(ratios)
    return None


def _add_epoch_axis(ax: Axes, steps_per_epoch: float | None) -> None:
    """A secondary x axis on top of `ax` that reads the global step as epochs."""
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                                   lambda e: e * steps_per_epoch))
        top.set_xlabel("epoch")


def _line_style(points: int) -> dict[str, Any]:
    """Keyword arguments for `Axes.plot` of a curve with `points` values: markers when there are few."""
    return {"marker": "o", "markersize": 4} if points <= FEW_POINTS else {}


def _new_figure(rows: int, width: float = 10.0, row_height: float = 3.6) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, row_height * rows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return figure, list(axes)


def _epoch_overlay(ax: Axes, epochs: list[dict[str, Any]], key: str, scale: float = 1.0) -> None:
    """Each epoch's mean of `key` as a horizontal segment spanning that epoch's steps."""
    previous_step = 0.0
    labelled = False
    for record in epochs:
        step, value = _number(record.get("step")), _number(record.get(key))
        if math.isfinite(step) and math.isfinite(value):
            ax.hlines(value * scale, previous_step, step, colors="C3", linewidth=2.5,
                      label=None if labelled else "epoch mean")
            labelled = True
        if math.isfinite(step):
            previous_step = step


def _mark_first_nonfinite(ax: Axes, xs: list[float], values: list[float | None], what: str) -> None:
    """A vertical red line at the first step whose value was logged as NaN or infinite (a divergence)."""
    bad = _nonfinite_at(xs, values)
    if bad:
        ax.axvline(bad[0], color="red", linestyle=":", linewidth=1.5,
                   label=f"{what} not finite from step {bad[0]:g}")


def plot_loss(metrics: Metrics, figure_path: Path) -> bool:
    """loss.png: loss and instance-discrimination top-1 per logged step, with each epoch's mean overlaid.
    Returns False (and draws nothing) when no loss was logged. A loss logged as NaN or infinite is a gap in
    the curve, and the first such step gets a red dotted line."""
    steps, epochs = metrics.get("step", []), metrics.get("epoch", [])
    xs, loss = _column(steps, "loss")
    _, accuracy = _column(steps, "accuracy")
    if all(v is None for v in loss) and not _has_finite(_column(epochs, "loss")[1]):
        return False
    figure, (loss_ax, accuracy_ax) = _new_figure(2)
    loss_ax.plot(xs, _drawable(loss), color="C0", linewidth=1, alpha=0.8, label="logged step")
    _epoch_overlay(loss_ax, epochs, "loss")
    _mark_first_nonfinite(loss_ax, xs, loss, "loss")
    loss_ax.set(title="Contrastive loss", ylabel="InfoNCE loss")
    accuracy_ax.plot(xs, _drawable(accuracy, scale=100), color="C0", linewidth=1, alpha=0.8,
                     label="logged step")
    _epoch_overlay(accuracy_ax, epochs, "accuracy", scale=100)
    accuracy_ax.yaxis.set_major_formatter(PercentFormatter())
    accuracy_ax.set(title="Instance-discrimination top-1 (positive key ranked first)", ylabel="top-1",
                    xlabel="global step")
    _add_epoch_axis(loss_ax, _steps_per_epoch(metrics))
    for ax in (loss_ax, accuracy_ax):
        ax.legend(loc="best")
    figure.savefig(figure_path)
    return True


def lr_momentum_figure(metrics: Metrics) -> Figure | None:
    """The figure of `plot_lr_momentum`, or None when neither the lr nor the momentum was logged. A few logged
    steps are drawn as points (a single step is otherwise an invisible line)."""
    steps = metrics.get("step", [])
    xs, lr = _column(steps, "lr")
    _, momentum = _column(steps, "momentum")
    if not _has_finite(lr) and not _has_finite(momentum):
        return None
    figure, (lr_ax, momentum_ax) = _new_figure(2, row_height=3.0)
    finite_lr = [abs(v) for v in _drawable(lr) if math.isfinite(v) and v != 0]
    # the power of ten goes into the label: matplotlib's offset text would collide with the epoch axis
    exponent = math.floor(math.log10(max(finite_lr))) if finite_lr else 0
    exponent = exponent if abs(exponent) >= 3 else 0
    lr_ax.plot(xs, _drawable(lr, scale=10.0 ** -exponent), color="C0", linewidth=1.5, **_line_style(len(xs)))
    lr_ax.set(title="Learning rate", ylabel=f"lr (×1e{exponent})" if exponent else "lr")
    momentum_ax.plot(xs, _drawable(momentum), color="C2", linewidth=1.5, **_line_style(len(xs)))
    momentum_ax.ticklabel_format(axis="y", useOffset=False)
    momentum_ax.set(title="Key-encoder momentum m (EMA: θk ← m·θk + (1−m)·θq)", ylabel="m",
                    xlabel="global step")
    _add_epoch_axis(lr_ax, _steps_per_epoch(metrics))
    return figure


def plot_lr_momentum(metrics: Metrics, figure_path: Path) -> bool:
    """lr_momentum.png: the learning rate and the key encoder's momentum per logged step. Returns False when
    neither was logged."""
    figure = lr_momentum_figure(metrics)
    if figure is None:
        return False
    figure.savefig(figure_path)
    return True


def knn_figure(metrics: Metrics) -> Figure | None:
    """The figure of `plot_knn`, or None when no epoch measured kNN. The baseline line is named after what it was
    measured on: "random init", or "the initial weights" for a run started from model.init (its "init" record), as
    in the report's tables."""
    epochs = metrics.get("epoch", [])
    xs, top1 = _column(epochs, "knn_top1", x="epoch")
    _, top5 = _column(epochs, "knn_top5", x="epoch")
    measured = [(x, t1, t5) for x, t1, t5 in zip(xs, top1, top5, strict=True)
                if t1 is not None and math.isfinite(t1)]
    if not measured:
        return None
    xs, top1, top5 = (list(column) for column in zip(*measured, strict=True))
    figure, (ax,) = _new_figure(1, row_height=4.4)
    ax.plot(xs, _drawable(top1, scale=100), color="C0", marker="o", markersize=4, linewidth=2, label="top-1")
    if _has_finite(top5):
        ax.plot(xs, _drawable(top5, scale=100), color="C0", marker=".", linewidth=1, alpha=0.45,
                label="top-5")
    baselines = metrics.get("baseline", [])
    baseline = _number(baselines[-1].get("knn_top1")) if baselines else math.nan
    start = baseline_start(given_init(metrics))
    title = f"kNN accuracy (last top-1 {top1[-1]:.1%}"
    if math.isfinite(baseline):
        ax.axhline(baseline * 100, color="0.4", linestyle="--", linewidth=1.5,
                   label=f"top-1 at {start} ({baseline:.1%})")
        title += f", {(top1[-1] - baseline) * 100:+.1f} pts over {start}"
    dips = find_dips(top1, window=DIP_WINDOW, factor=DIP_FACTOR)
    if dips:
        ax.scatter([xs[i] for i in dips], [top1[i] * 100 for i in dips], s=140, facecolors="none",
                   edgecolors="red", linewidths=2, zorder=3,
                   label=f"dip (< median of last {DIP_WINDOW} / {DIP_FACTOR:g})")
    ax.yaxis.set_major_formatter(PercentFormatter())
    ax.set(title=title + ")", xlabel="epoch", ylabel="accuracy on the test split")
    ax.set_xlim(0, max(xs) + 0.5)  # from epoch 0, where the baseline was measured
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best")
    return figure


def plot_knn(metrics: Metrics, figure_path: Path) -> bool:
    """knn.png: kNN top-1 (and top-5) per epoch, the baseline measured before the first step as a dashed line when
    logged, and dips (`find_dips`) circled. Returns False when no epoch measured kNN."""
    figure = knn_figure(metrics)
    if figure is None:
        return False
    figure.savefig(figure_path)
    return True


def _layer_names(steps: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}  # insertion-ordered set: layers in the order they were first logged
    for record in steps:
        norms = record.get("grad_norm")
        if isinstance(norms, dict):
            names.update(dict.fromkeys(map(str, norms)))
    return list(names)


def grad_norms_figure(metrics: Metrics) -> Figure | None:
    """The figure of `plot_grad_norms`, or None when no gradient norm was logged. A few logged steps are drawn as
    points; when no layer has enough earlier points for a spike to be judged, the title says so instead of
    "no spikes"."""
    steps = metrics.get("step", [])
    layers = _layer_names(steps)
    if not layers:
        return None
    figure, (ax,) = _new_figure(1, width=11, row_height=4.8)
    colours: Callable[[int], Any] = (
        (lambda i: f"C{i}") if len(layers) <= MAX_CYCLE_COLOURS
        else (lambda i: matplotlib.colormaps["viridis"](i / (len(layers) - 1)))
    )
    spike_count, spikes_labelled, nonfinite_labelled, judged = 0, False, False, False
    for i, layer in enumerate(layers):
        xs, norms = [], []
        for record in steps:
            step, values = _number(record.get("step")), record.get("grad_norm")
            if math.isfinite(step) and isinstance(values, dict):
                xs.append(step)
                norms.append(_logged(values.get(layer)))
        drawable = _drawable(norms, positive=True)  # log axis: positive finite values only
        ax.plot(xs, drawable, color=colours(i), linewidth=1.2, label=layer, **_line_style(len(xs)))
        judged = judged or sum(v is not None and math.isfinite(v) for v in norms) > SPIKE_HISTORY
        spikes = [j for j in find_spikes(norms, window=SPIKE_WINDOW, factor=SPIKE_FACTOR,
                                         min_history=SPIKE_HISTORY) if drawable[j] > 0]
        spike_count += len(spikes)
        if spikes:
            ax.scatter([xs[j] for j in spikes], [drawable[j] for j in spikes], s=90, facecolors="none",
                       edgecolors="red", linewidths=1.8, zorder=3,
                       label=None if spikes_labelled else f"spike (> {SPIKE_FACTOR:g}× rolling median)")
            spikes_labelled = True
        bad = _nonfinite_at(xs, norms)
        if bad:  # drawn along the top edge: a NaN or infinite norm has no place on the y axis
            ax.scatter(bad, [0.97] * len(bad), marker="x", color="red", s=50, zorder=3,
                       transform=ax.get_xaxis_transform(),
                       label=None if nonfinite_labelled else "non-finite norm")
            nonfinite_labelled = True
    ax.set_yscale("log")
    plural = "s" if spike_count > 1 else ""
    spikes_text = (f"{spike_count} spike{plural} marked" if spike_count else "no spikes" if judged
                   else f"too few steps to judge spikes: each needs {SPIKE_HISTORY} before it")
    ax.set(title=f"Gradient norm per layer ({spikes_text})",
           xlabel="global step", ylabel="‖∇‖₂ (log scale)")
    _add_epoch_axis(ax, _steps_per_epoch(metrics))
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: labels[k] not in layers)  # layers first, then markers
    many = len(layers) > 8  # then the legend goes to the right of the axes
    ax.legend([handles[k] for k in order], [labels[k] for k in order], loc="upper left" if many else "best",
              bbox_to_anchor=(1.01, 1.0) if many else None, ncol=2 if len(layers) > 20 else 1,
              fontsize=8 if many else None)
    return figure


def plot_grad_norms(metrics: Metrics, figure_path: Path) -> bool:
    """grad_norms.png: the gradient norm of each watched layer per logged step on a log axis; spikes
    (`find_spikes`: > SPIKE_FACTOR × the rolling median) circled in red, non-finite norms as red crosses along
    the top edge. Returns False when no gradient norm was logged."""
    figure = grad_norms_figure(metrics)
    if figure is None:
        return False
    figure.savefig(figure_path)
    return True


HEALTH_PANELS = (  # (epoch-record key, title, y label, y scale): the label-free health metrics, then the pretext
    ("rank", "Effective rank of the backbone features (RankMe; falls at collapse)", "rank", 1.0),
    ("dimension_std", "Mean per-dimension std of the normalised embeddings (≈ 1/√d healthy, 0 at collapse)", "std",
     1.0),
    ("alignment", "Alignment of the two views' embeddings (E‖z₁−z₂‖², lower is better)", "alignment", 1.0),
    ("uniformity", "Uniformity of the embeddings (log E exp(−2‖zᵢ−zⱼ‖²), lower is more uniform)", "uniformity",
     1.0),
    ("accuracy", "Instance-discrimination top-1 (epoch mean)", "top-1", 100.0),
)


def health_figure(metrics: Metrics) -> Figure | None:
    """The figure of `plot_health`: one panel per health metric of the epoch records (`HEALTH_PANELS`), against the
    epoch, with markers when there are few epochs; None when no epoch measured the health metrics."""
    epochs = metrics.get("epoch", [])
    if not any(_has_finite(_column(epochs, key, x="epoch")[1]) for key, *_ in HEALTH_PANELS[:-1]):
        return None
    figure, axes = _new_figure(len(HEALTH_PANELS), row_height=2.4)
    for ax, (key, title, label, scale) in zip(axes, HEALTH_PANELS, strict=True):
        xs, values = _column(epochs, key, x="epoch")
        kept = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]  # epochs that measured it
        xs, values = [x for x, _ in kept], [v for _, v in kept]
        ax.plot(xs, _drawable(values, scale=scale), color="C3" if key == "accuracy" else "C0", linewidth=1.5,
                **_line_style(len(xs)))
        ax.set(title=title, ylabel=label)
        if key == "accuracy":
            ax.yaxis.set_major_formatter(PercentFormatter())
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def plot_health(metrics: Metrics, figure_path: Path) -> bool:
    """health.png: the label-free health metrics per epoch (effective rank, per-dimension std, alignment,
    uniformity) and the pretext accuracy. Returns False when no epoch measured them (monitor.health_images=0)."""
    figure = health_figure(metrics)
    if figure is None:
        return False
    figure.savefig(figure_path)
    return True


PLOTTERS: dict[str, Callable[[Metrics, Path], bool]] = {
    "loss.png": plot_loss,
    "lr_momentum.png": plot_lr_momentum,
    "knn.png": plot_knn,
    "grad_norms.png": plot_grad_norms,
    "health.png": plot_health,
}


def draw_plots(metrics: Metrics, plots_dir: Path) -> list[Path]:
    """Draw every plot that `metrics` has data for into `plots_dir` (created if needed) and return their paths
    in the order loss, lr_momentum, knn, grad_norms, health. A plot without data (no kNN measured, no gradient norms
    logged, no records at all) is not drawn, and a stale PNG of that name from an earlier call is removed."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context(STYLE):
        for name, plot in PLOTTERS.items():
            path = plots_dir / name
            if plot(metrics, path):
                written.append(path)
            else:
                path.unlink(missing_ok=True)
    return written


def write_plots(run_dir: Path) -> list[Path]:
    """`draw_plots` for a run folder: reads `run_dir/metrics.jsonl` (a missing file counts as empty) and draws
    into `run_dir/plots/`; returns the paths written."""
    run_dir = Path(run_dir)
    return draw_plots(read_metrics(run_dir / METRICS_FILE, missing_ok=True), run_dir / PLOTS_DIR)
