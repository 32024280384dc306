"""The experiments' figures. Each takes (experiment, results, path), draws with pyplot and returns the path of the
PNG it wrote. The backend is Agg (no display needed), chosen for the process by its entry point, not here: the
`mocokit` command and every `pretrain` run call `training.process.configure_process`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from mocokit.experiments.seeds import Summary, summarise
from mocokit.experiments.spec import Experiment, VariantResult
from mocokit.reporting import find_dips, find_spikes, read_metrics


def _save(figure, path: Path, title: str) -> Path:
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _percent_bars(summaries: list[Summary], name: str) -> tuple[list[float], list[list[float]] | None]:
    """The mean of field `name` in % per summary, and the min-max error bars (None when every summary is one run)."""
    spreads = [s.values.get(name) for s in summaries]
    means = [100 * (v.mean if v else 0.0) for v in spreads]
    if all(v is None or v.n < 2 for v in spreads):
        return means, None
    below = [100 * (v.mean - v.low) if v else 0.0 for v in spreads]
    above = [100 * (v.high - v.mean) if v else 0.0 for v in spreads]
    return means, [below, above]


def knn_against_x(experiment: Experiment, results: list[VariantResult], path: Path, x_label: str = "",
                  log_x: bool = False, categorical: bool = False) -> Path:
    """kNN top-1 (left) and instance-discrimination accuracy (right) against each variant's x, a line per series;
    over seeds, the mean with min-max error bars. categorical: the x values evenly spaced and labelled (e.g. m = 0,
    0.9, 0.99, 0.999)."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series: dict[str, list[Summary]] = defaultdict(list)
    for summary in summarise(results):
        series[summary.variant.series or experiment.name].append(summary)
    ticks = sorted({r.variant.x for r in results if r.variant.x is not None})
    for name, members in series.items():
        members = sorted(members, key=lambda s: s.variant.x if s.variant.x is not None else 0.0)
        xs = [s.variant.x for s in members]
        if categorical:
            xs = [ticks.index(x) for x in xs]
        for axis, field in ((left, "knn_top1"), (right, "inst_disc_accuracy")):
            means, errors = _percent_bars(members, field)
            axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name)
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
    """kNN top-1 and instance-discrimination accuracy side by side for each variant; over seeds, the mean with
    min-max error bars."""
    summaries = summarise(results)
    figure, axis = plt.subplots(figsize=(max(6.0, 2.2 * len(summaries)), 4))
    positions = range(len(summaries))
    width = 0.38
    for offset, field, label in ((-width / 2, "knn_top1", "kNN top-1"),
                                 (width / 2, "inst_disc_accuracy", "instance discrimination top-1 (last epoch)")):
        means, errors = _percent_bars(summaries, field)
        axis.bar([p + offset for p in positions], means, width, yerr=errors, capsize=3, label=label)
    baselines = [r.random_init_top1 for r in results if r.random_init_top1 is not None]
    if baselines:
        axis.axhline(100 * baselines[0], color="grey", linestyle=":", label="kNN at random init")
    axis.set_xticks(list(positions), [s.variant.label + (f" ({len(s.runs)} seeds)" if len(s.runs) > 1 else "")
                                      for s in summaries], rotation=20, ha="right")
    axis.set_ylabel("%")
    axis.grid(axis="y", alpha=0.3)
    axis.set_ylim(0, axis.get_ylim()[1] * 1.25)  # headroom: the legend's row sits above the bars, not on them
    axis.legend(loc="upper center", ncol=3, fontsize=8)
    return _save(figure, path, experiment.title)


def epoch_curves(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """Per run, kNN top-1 (left) and the pretext task's accuracy (right) after each epoch: MoCo's figure A.1, in
    which a model that cheats through BatchNorm climbs on the right while falling behind on the left."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for result in results:
        label = result.variant.label + ("" if result.seed is None else f", seed {result.seed}")
        epochs = [r for r in read_metrics(result.run_dir / "metrics.jsonl")["epoch"] if r.get("accuracy") is not None]
        left.plot([e for e, _ in result.knn_curve], [100 * v for _, v in result.knn_curve], marker="o", label=label)
        right.plot([r["epoch"] for r in epochs], [100 * r["accuracy"] for r in epochs], marker="o", label=label)
    baselines = [r.random_init_top1 for r in results if r.random_init_top1 is not None]
    if baselines:
        left.axhline(100 * baselines[0], color="grey", linestyle=":", label="random init")
    for axis, what in ((left, "kNN top-1 (%)"), (right, "instance discrimination top-1 (%)")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(what)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(figure, path, experiment.title)


def stability(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """Per variant: the gradient norms of the first and last watched layers over the steps, with spikes marked, and
    the kNN curve over the epochs, with dips marked; a row of the two panels per series (e.g. per learning rate)."""
    series: dict[str, list[VariantResult]] = defaultdict(list)
    for result in results:
        series[result.variant.series].append(result)
    figure, axes = plt.subplots(len(series), 2, figsize=(12, 4.2 * len(series)), squeeze=False)
    for (name, members), (grads, knn) in zip(series.items(), axes):
        _stability_row(members, grads, knn, name)
    return _save(figure, path, experiment.title)


def _stability_row(results: list[VariantResult], grads, knn, name: str) -> None:
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
        if name:
            axis.set_title(name)


def learning_curves(experiment: Experiment, results: list[VariantResult], path: Path) -> Path:
    """Fine-tuning test top-1 per epoch, from scratch and from MoCo pretraining, a panel per backbone (and seed);
    each legend entry carries the curve's oscillation (mean absolute epoch-to-epoch change, `Curve.oscillation`)
    when the evaluation measured it."""
    figure, axes = plt.subplots(1, max(1, len(results)), figsize=(6 * max(1, len(results)), 4), squeeze=False)
    for axis, result in zip(axes[0], results):
        for start in ("pretrained", "random_init"):
            curve = result.extra.get(f"{start}_curve") or {}
            label = "MoCo pretrained" if start == "pretrained" else "from scratch"
            oscillation = result.extra.get(f"{start}_oscillation")
            if oscillation is not None:
                label += f" (oscillation {100 * oscillation:.1f} points/epoch)"
            axis.plot(curve.get("epochs", []), [100 * v for v in curve.get("test_top1", [])], marker="o",
                      markersize=3, label=label)
        axis.set_title(result.variant.label + ("" if result.seed is None else f", seed {result.seed}"))
        axis.set_xlabel("fine-tuning epoch")
        axis.set_ylabel("test top-1 (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, path, experiment.title)
