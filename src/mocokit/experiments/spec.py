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
    medium: tuple[str, ...] | None = None  # its own overrides at the medium scale (None: the same as `small`)
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
    seed: int | None = None  # train.seed of this run when the scale runs each variant over seeds (None: one run)

    def row(self) -> dict[str, Any]:
        """The JSON-able summary (no paths to the machine's files other than the run folder's name)."""
        return {"label": self.variant.label, "series": self.variant.series, "x": self.variant.x,
                "knn_top1": self.knn_top1, "knn_top5": self.knn_top5, "random_init_top1": self.random_init_top1,
                "inst_disc_accuracy": self.inst_disc_accuracy, "final_loss": self.final_loss,
                "minutes": round(self.minutes, 2), "knn_curve": self.knn_curve, "run": self.run_dir.name,
                "seed": self.seed, **self.extra}


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
    # The medium scale (`--scale medium`): overrides that let the paper's effect show in about 60 minutes of this
    # 2-core machine for all variants and seeds together; its own variants when not the small scale's (empty: the
    # same), and the seeds each of them runs with (empty: once, with the config's train.seed).
    medium: tuple[str, ...] = ()
    medium_variants: tuple[Variant, ...] = ()
    medium_seeds: tuple[int, ...] = ()
    # The evaluation's own training, in images of pretraining cost, of one variant's config in a mode (e.g. the
    # fine-tuning runs of `transfer`), for the budget estimate (`experiments.budget`); None: no training.
    evaluate_cost: Callable[[Any, str], float] | None = None

    def variants_for(self, mode: str) -> tuple[Variant, ...]:
        """The variants run in `mode`: the medium scale's own when it has them, else the experiment's."""
        return self.medium_variants if mode == "medium" and self.medium_variants else self.variants

    def seeds_for(self, mode: str) -> tuple[int, ...]:
        """The seeds each variant runs with in `mode` (empty: one run with the config's own train.seed)."""
        return self.medium_seeds if mode == "medium" else ()

    def config_for(self, variant: Variant, mode: str, overrides: Sequence[str] = (),
                   seed: int | None = None) -> tuple[str, list[str]]:
        """(preset, overrides) of `variant` in `mode`: "small" (this machine, ~20 minutes), "medium" (this machine,
        ~60 minutes), "smoke" (CI) or "paper" (GPUs). The user's `overrides` come after the scale's and before the
        variant's own, so that they cannot undo what the variant varies; `seed` (a run of a seeded scale) comes
        last, as train.seed."""
        seeded = [f"train.seed={seed}"] if seed is not None else []
        if mode == "paper":
            preset = variant.paper_preset or self.paper_preset or variant.preset or self.preset
            return preset, [*self.paper_scale, *overrides, *variant.overrides, *seeded]
        if mode == "medium":
            own = [*variant.overrides, *(variant.small if variant.medium is None else variant.medium)]
            return variant.preset or self.preset, [*self.medium, *overrides, *own, *seeded]
        scale = self.smoke if mode == "smoke" else self.scale
        own = [*variant.overrides, *variant.small, *(variant.smoke if mode == "smoke" else ())]
        return variant.preset or self.preset, [*scale, *overrides, *own, *seeded]
