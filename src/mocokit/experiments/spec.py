"""What an experiment is: one base pretraining config, the variants that change one thing in it, and how the
results are drawn. Experiments are data; `runner.run_experiment` runs any of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Variant:
    label: str  # a table row and a legend entry; also names the variant's run folder
    overrides: tuple[str, ...]  # config key=value pairs on top of the experiment's base
    series: str = ""  # the plotted line this variant belongs to (e.g. its dictionary mechanism)
    x: float | None = None  # the value on the plot's x axis (e.g. K, m)
    preset: str | None = None  # another base config than the experiment's (e.g. each MoCo version's own)
    small: tuple[str, ...] = ()  # its own overrides at the small and smoke scales only (e.g. a ViT-tiny)
    smoke: tuple[str, ...] = ()  # its own tiny-mode overrides (e.g. a 2-block ViT)
    paper_preset: str | None = None  # its base config at the paper's scale, when not the experiment's


@dataclass
class VariantResult:
    variant: Variant
    run_dir: Path
    knn_top1: float | None
    knn_top5: float | None
    random_init_top1: float | None  # the same network before training (kNN baseline)
    inst_disc_accuracy: float | None  # the pretext task's top-1 in the last epoch (1 / (K+1) is chance)
    final_loss: float | None
    minutes: float
    knn_curve: list[tuple[float, float]]  # (epoch, kNN top-1) after each measured epoch
    extra: dict[str, Any] = field(default_factory=dict)  # what an experiment's own `evaluate` adds

    def row(self) -> dict[str, Any]:
        """The JSON-able summary (no paths to the machine's files other than the run folder's name)."""
        return {"label": self.variant.label, "series": self.variant.series, "x": self.variant.x,
                "knn_top1": self.knn_top1, "knn_top5": self.knn_top5, "random_init_top1": self.random_init_top1,
                "inst_disc_accuracy": self.inst_disc_accuracy, "final_loss": self.final_loss,
                "minutes": round(self.minutes, 2), "knn_curve": self.knn_curve, "run": self.run_dir.name,
                **self.extra}


@dataclass(frozen=True)
class Experiment:
    name: str  # `mocokit experiment NAME`
    title: str
    paper: str  # what the paper reports, in one or two sentences, with the figure or table
    preset: str  # the base config
    scale: tuple[str, ...]  # the default small scale: overrides that fit this 2-core machine in ~20 minutes
    smoke: tuple[str, ...]  # a few steps on a few images, for CI (`--smoke`)
    variants: tuple[Variant, ...]
    plot: Callable[[Experiment, list[VariantResult], Path], Path]  # draws the figure, returns its path
    columns: tuple[str, ...] = ("knn_top1", "inst_disc_accuracy", "minutes")  # the table's columns after "label"
    evaluate: Callable[[Experiment, VariantResult, list[str], str], dict[str, Any]] | None = None
    paper_preset: str = ""  # the base config at the paper's scale (ImageNet, GPUs): `--paper-scale`
    paper_scale: tuple[str, ...] = ()  # overrides at the paper's scale (none: the preset as it is)

    def config_for(self, variant: Variant, mode: str, overrides: Sequence[str] = ()) -> tuple[str, list[str]]:
        """(preset, overrides) of `variant` in `mode`: "small" (this machine), "smoke" (CI) or "paper" (GPUs).
        The user's `overrides` come after the scale's and before the variant's own, so that they cannot undo what
        the variant varies."""
        if mode == "paper":
            preset = variant.paper_preset or self.paper_preset or variant.preset or self.preset
            return preset, [*self.paper_scale, *overrides, *variant.overrides]
        scale = self.smoke if mode == "smoke" else self.scale
        own = [*variant.overrides, *variant.small, *(variant.smoke if mode == "smoke" else ())]
        return variant.preset or self.preset, [*scale, *overrides, *own]
