"""Runs an experiment: each variant is an ordinary pretraining run in its own folder under the experiment's folder,
then a table (Markdown and JSON) and a figure. Running the same command again continues an interrupted experiment:
finished variants are read back from their run folders, with the experiment's own evaluation of them (fine-tunings
and probes that take minutes: `EVALUATION_FILE`), and an interrupted one resumes from its checkpoint."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mocokit.engine.pretrain import pretrain
from mocokit.experiments.seeds import run_name, seeded, summarise
from mocokit.experiments.spec import Experiment, VariantResult
from mocokit.files import write_text_atomically
from mocokit.reporting import read_metrics
from mocokit.training.run_config import load_config

MODES = ("small", "medium", "smoke", "paper")
# A finished variant's evaluation by its experiment (`Experiment.evaluate`), in its run folder with the scale and
# overrides it was made with: a rerun of the same command reads it back instead of repeating the fine-tunings.
EVALUATION_FILE = "experiment-evaluation.json"


@dataclass
class ExperimentResult:
    experiment: Experiment
    folder: Path
    variants: list[VariantResult]
    table: Path  # table.md
    results: Path  # results.json
    figure: Path
    minutes: float
    interrupted: bool  # a variant stopped on a signal: run the same command again to continue


def run_experiment(experiment: Experiment, folder: Path, overrides: Sequence[str] = (), mode: str = "small",
                   echo: Callable[[str], None] = print) -> ExperimentResult:
    """Run every variant of `experiment` into `folder`/<variant> (at a scale with seeds, once per seed into
    `folder`/<variant>-seed-<seed>). mode: "small" (the default scale, this machine, ~20 minutes), "medium" (this
    machine, ~60 minutes), "smoke" (a few steps, for CI) or "paper" (the paper's scale, for GPUs). `overrides`
    apply to all variants (e.g. data.path, train.epochs, train.device)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    results: list[VariantResult] = []
    variants = experiment.variants_for(mode)
    if mode == "smoke" and len(variants) > 2:  # the first and the last: every code path, half the time
        variants = (variants[0], variants[-1])
    # Seed by seed: every variant's first seed runs before any second seed, so that an experiment stopped part-way
    # (or cut short for time) already compares all its variants once.
    runs = [(variant, seed) for seed in (experiment.seeds_for(mode) or (None,)) for variant in variants]
    for number, (variant, seed) in enumerate(runs, 1):
        run_dir = folder / run_name(slug(variant.label), seed)
        preset, config_overrides = experiment.config_for(variant, mode, overrides, seed)
        cfg = load_config(preset, [*config_overrides, f"run.dir={run_dir}", "resume=auto"])
        label = variant.label if seed is None else f"{variant.label}, seed {seed}"
        echo(f"[{experiment.name} {number}/{len(runs)}] {label}: {' '.join(variant.overrides) or 'base config'}")
        outcome = pretrain(cfg, echo=lambda message, label=label: echo(f"  [{label}] {message}"))
        if not outcome.completed:
            echo(f"{experiment.name} stopped during {label}; run the same command again to continue")
            return _finish(experiment, folder, results, started, interrupted=True)
        result = read_variant(variant, run_dir, outcome.minutes, seed)
        if experiment.evaluate is not None:
            result.extra.update(evaluate_variant(experiment, result, list(overrides), mode,
                                                 echo=lambda message, label=label: echo(f"  [{label}] {message}")))
        results.append(result)
        echo(f"  {label}: kNN top-1 {_percent(result.knn_top1)} (random init "
             f"{_percent(result.random_init_top1)}), instance discrimination {_percent(result.inst_disc_accuracy)}")
    return _finish(experiment, folder, results, started, interrupted=False)


def evaluate_variant(experiment: Experiment, result: VariantResult, overrides: list[str], mode: str,
                     echo: Callable[[str], None] = print) -> dict:
    """`experiment.evaluate` of a finished variant, or its earlier result from the run folder (`EVALUATION_FILE`)
    when that was made at the same scale with the same overrides; says what it does and what came out."""
    saved = result.run_dir / EVALUATION_FILE
    made_with = {"mode": mode, "overrides": overrides}
    if saved.exists():
        record = json.loads(saved.read_text())
        if record.get("made_with") == made_with:
            echo(f"evaluation read back from {saved} (made in {record['minutes']:.1f} min)")
            return record["values"]
    echo(f"evaluating the pretrained encoder ({experiment.evaluate.__name__}); no output until it ends")
    started = time.perf_counter()
    values = experiment.evaluate(experiment, result, overrides, mode)
    minutes = (time.perf_counter() - started) / 60
    write_text_atomically(saved, json.dumps({"made_with": made_with, "minutes": round(minutes, 2),
                                             "values": values}, indent=2, default=str) + "\n")
    numbers = ", ".join(f"{key} {_cell(key, value)}" for key, value in values.items()
                        if isinstance(value, float | int) and not isinstance(value, bool))
    echo(f"evaluated in {minutes:.1f} min: {numbers}")
    return values


def read_variant(variant, run_dir: Path, minutes: float, seed: int | None = None) -> VariantResult:
    """A finished variant's numbers, from its metrics.jsonl (so a rerun reports the same numbers)."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    epochs = metrics["epoch"]
    curve = [(float(r["epoch"]), float(r["knn_top1"])) for r in epochs if r.get("knn_top1") is not None]
    knn = [r for r in epochs if r.get("knn_top1") is not None]
    baseline = metrics["baseline"][-1] if metrics["baseline"] else {}
    final = metrics["final"][-1] if metrics["final"] else {}
    return VariantResult(
        variant, run_dir,
        knn_top1=knn[-1]["knn_top1"] if knn else None, knn_top5=knn[-1].get("knn_top5") if knn else None,
        random_init_top1=baseline.get("knn_top1"),
        inst_disc_accuracy=epochs[-1].get("accuracy") if epochs else None,
        final_loss=epochs[-1].get("loss") if epochs else None,
        minutes=float(final.get("minutes", minutes)), knn_curve=curve, seed=seed,
    )


def _finish(experiment: Experiment, folder: Path, results: list[VariantResult], started: float,
            interrupted: bool) -> ExperimentResult:
    minutes = (time.perf_counter() - started) / 60
    results_path = folder / "results.json"
    results_path.write_text(json.dumps({
        "experiment": experiment.name, "title": experiment.title, "paper": experiment.paper,
        "complete": not interrupted, "minutes": round(minutes, 2), "variants": [r.row() for r in results],
        **({"summary": [s.record() for s in summarise(results)]} if seeded(results) else {}),
    }, indent=2, default=str) + "\n")
    table = folder / "table.md"
    table.write_text(markdown_table(experiment, results))
    figure = experiment.plot(experiment, results, folder / f"{experiment.name}.png") if results else folder
    return ExperimentResult(experiment, folder, results, table, results_path, figure, minutes, interrupted)


def markdown_table(experiment: Experiment, results: list[VariantResult]) -> str:
    """One row per run; when the runs are seeded, one row per variant instead, with its seeds and, for each
    numeric column, the mean over the seeds and their range: `33.1% (32.0–34.2%)`."""
    if seeded(results):
        return _seeded_table(experiment, results)
    header = ["variant", *experiment.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        row = result.row()
        lines.append("| " + " | ".join([result.variant.label, *(_cell(column, row.get(column))
                                                               for column in experiment.columns)]) + " |")
    return "\n".join(lines) + "\n"


def _seeded_table(experiment: Experiment, results: list[VariantResult]) -> str:
    header = ["variant", "seeds", *experiment.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for summary in summarise(results):
        cells = [summary.variant.label, ", ".join(str(s) for s in summary.seeds)]
        for column in experiment.columns:
            value = summary.values.get(column)
            if value is None:  # not a number: each run's value, once when they agree
                each = [_cell(column, r.row().get(column)) for r in summary.runs]
                cells.append(each[0] if len(set(each)) == 1 else " / ".join(each))
            elif value.n == 1:
                cells.append(_cell(column, value.mean))
            else:
                cells.append(f"{_cell(column, value.mean)} ({_cell(column, value.low)}–{_cell(column, value.high)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and column.endswith("_oscillation"):  # a change of accuracy per epoch, in points
        return f"{100 * value:.1f} pts"
    if isinstance(value, float) and column != "minutes" and ("top1" in column or "accuracy" in column
                                                              or column.endswith("_gain")):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def slug(label: str) -> str:
    """A folder name for a variant label: 'm = 0.99' -> 'm-0.99'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-").lower() or "variant"
