"""The experiments' figures. Each takes (experiment, results, path), draws with pyplot and returns the path of the
PNG it wrote. The backend is Agg (no display needed), chosen for the process by its entry point, not here: the
`mocokit` command and every `pretrain` run call `training.process.configure_process`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from mocokit.experiments.spec import Experiment, VariantResult
from mocokit.reporting import find_dips, find_spikes, read_metrics


def _save(figure, path: Path, title: str) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def knn_against_x(experiment: Experiment, results: list[VariantResult], path: Path, x_label: str = "",
                  log_x: bool = False, categorical: bool = False) -> Path:
    """kNN top-1 (left) and instance-discrimination accuracy (right) against each variant's x, a line per series.
    categorical: the x values evenly spaced and labelled (e.g. m = 0, 0.9, 0.99, 0.999)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[VariantResult]] = defaultdict(list)
    for result in results:
        series[result.variant.series or experiment.name].append(result)
    for name, members in series.items():
        members = sorted(members, key=lambda r: r.variant.x if r.variant.x is not None else 0.0)
        xs = [r.variant.x for r in members]
        if categorical:
            ticks = sorted({r.variant.x for r in results if r.variant.x is not None})
            xs = [ticks.index(x) for x in xs]
        left.plot(xs, [100 * (r.knn_top1 or 0) for r in members], marker="o", label=name)
        right.plot(xs, [100 * (r.inst_disc_accuracy or 0) for r in members], marker="o", label=name)
    baselines = [r.random_init_top1 for r in results if r.random_init_top1 is not None]
    if baselines:
        left.axhline(100 * baselines[0], color="grey", linestyle=":", label="random init")
    for axis, what in ((left, "kNN top-1 (%)"), (right, "instance discrimination top-1 (%)")):
        axis.set_xlabel(x_label)
        axis.set_ylabel(what)
        axis.grid(alpha=0.3)
        if log_x:
            axis.set_xscale("log", base=2)
        if categorical:
            axis.set_xticks(range(len(ticks)), [f"{t:g}" for t in ticks])
        axis.legend()
    return _save(figure, path, experiment.title)


def bars(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """kNN top-1 and instance-discrimination accuracy side by side for each variant."""
    figure, axis = plt.subplots(figsize=(max(6.0, 2.2 * len(results)), 4))
    positions = range(len(results))
    width = 0.38
    axis.bar([p - width / 2 for p in positions], [100 * (r.knn_top1 or 0) for r in results], width,
             label="kNN top-1")
    axis.bar([p + width / 2 for p in positions], [100 * (r.inst_disc_accuracy or 0) for r in results], width,
             label="instance discrimination top-1 (last epoch)")
    baselines = [r.random_init_top1 for r in results if r.random_init_top1 is not None]
    if baselines:
        axis.axhline(100 * baselines[0], color="grey", linestyle=":", label="kNN at random init")
    axis.set_xticks(list(positions), [r.variant.label for r in results], rotation=20, ha="right")
    axis.set_ylabel("%")
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    return _save(figure, path, experiment.title)


def stability(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """Per variant: the gradient norms of the first and last watched layers over the steps, with spikes marked, and
    the kNN curve over the epochs, with dips marked."""
    figure, (grads, knn) = plt.subplots(1, 2, figsize=(12, 4.2))
    for result in results:
        steps = read_metrics(result.run_dir / "metrics.jsonl")["step"]
        norms = [r for r in steps if isinstance(r.get("grad_norm"), dict)]
        layers = list(norms[0]["grad_norm"]) if norms else []
        for layer in layers[:1] + layers[-1:]:
            xs = [r["step"] for r in norms]
            ys = [r["grad_norm"].get(layer) for r in norms]
            line, = grads.plot(xs, ys, linewidth=1, label=f"{result.variant.label}: {layer}")
            spikes = find_spikes(ys)
            grads.scatter([xs[i] for i in spikes], [ys[i] for i in spikes], color=line.get_color(), marker="x",
                          zorder=3)
        epochs = [e for e, _ in result.knn_curve]
        values = [100 * v for _, v in result.knn_curve]
        line, = knn.plot(epochs, values, marker="o", label=result.variant.label)
        dips = find_dips(values)
        knn.scatter([epochs[i] for i in dips], [values[i] for i in dips], s=120, facecolors="none",
                    edgecolors=line.get_color(), zorder=3)
    grads.set_yscale("log")
    grads.set_xlabel("step")
    grads.set_ylabel("gradient norm (x: spike)")
    knn.set_xlabel("epoch")
    knn.set_ylabel("kNN top-1 (%) (circle: dip)")
    for axis in (grads, knn):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _save(figure, path, experiment.title)


def learning_curves(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """Fine-tuning test top-1 per epoch, from scratch and from MoCo pretraining, a panel per backbone."""
    figure, axes = plt.subplots(1, max(1, len(results)), figsize=(6 * max(1, len(results)), 4), squeeze=False)
    for axis, result in zip(axes[0], results):
        for start in ("pretrained", "random_init"):
            curve = result.extra.get(f"{start}_curve") or {}
            axis.plot(curve.get("epochs", []), [100 * v for v in curve.get("test_top1", [])], marker="o",
                      label="MoCo pretrained" if start == "pretrained" else "from scratch")
        axis.set_title(result.variant.label)
        axis.set_xlabel("fine-tuning epoch")
        axis.set_ylabel("test top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, path, experiment.title)
