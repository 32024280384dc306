"""The final numbers of a run, computed from its metrics records (see `metrics.read_metrics`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from mocokit.reporting.metrics import Metrics


def given_init(metrics: Metrics) -> str | None:
    """model.init as given, from the run's "init" record; None for a run that started from a random initialisation."""
    return next((str(r.get("given")) for r in metrics.get("init", [])), None)


def baseline_start(initial_weights: str | None) -> str:
    """What the kNN baseline was measured on, in words: "random init", or "the initial weights" (model.init)."""
    return "random init" if initial_weights is None else "the initial weights"


@dataclass(frozen=True)
class RunSummary:
    """Headline numbers; None where the run has not produced them yet. Accuracies are fractions in [0, 1]."""

    last_loss: float | None  # loss of the last step record (else the last epoch's mean); may be NaN
    last_accuracy: float | None  # instance-discrimination top-1, same record as last_loss
    knn_top1: float | None  # the final record's kNN, else the last epoch that measured one
    knn_top5: float | None
    knn_epoch: int | None  # the epoch knn_top1 was measured at
    baseline_top1: float | None  # kNN before the first step: of the random initialisation, or of model.init's weights
    baseline_top5: float | None
    epochs: int  # completed epochs
    steps: int  # highest global step logged
    minutes: float | None  # the final record's minutes, else the span between the first and the last record
    mean_images_per_s: float | None  # mean over step records with a finite throughput
    started: float | None  # unix time of the first record
    first_nonfinite_loss_step: int | None  # the first step whose logged loss is NaN or infinite
    pixel_top1: float | None = None  # kNN on the mean-centred raw pixels: the baseline that costs no training
    pixel_top5: float | None = None
    seconds_spent: dict[str, float] | None = None  # wall time per category (setup, baselines, training, ...)
    budget: dict[str, Any] | None = None  # the time budget's plan (train.time_budget), when the run had one
    initial_weights: str | None = None  # model.init as given (its "init" record); None: a random initialisation
    best_epoch: int | None = None  # the epoch the label-free score ranked best (checkpoints/best.pt, RUN@best)
    best_uniformity: float | None = None  # its score: the uniformity of the embeddings (lower is better)

    @property
    def knn_gain(self) -> float | None:
        """kNN top-1 minus the random-initialisation baseline (a fraction; ×100 for percentage points)."""
        if self.knn_top1 is None or self.baseline_top1 is None:
            return None
        return self.knn_top1 - self.baseline_top1


def _number(value: Any) -> float | None:
    """A float for int/float values (NaN and infinity included), None for anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _finite(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def summarize(metrics: Metrics) -> RunSummary:
    """The headline numbers of `metrics`; works on partial runs: no epochs yet, no kNN, no records at all."""
    steps, epochs = metrics.get("step", []), metrics.get("epoch", [])
    finals, baselines = metrics.get("final", []), metrics.get("baseline", [])
    final = finals[-1] if finals else {}
    baseline = baselines[-1] if baselines else {}
    pixels = next((r for r in reversed(baselines) if "pixel_top1" in r), {})  # a resume logs no new one
    plans = metrics.get("budget", [])
    budget = final.get("budget") if isinstance(final.get("budget"), dict) else (plans[-1] if plans else None)
    spent = final.get("seconds_spent")
    last = steps[-1] if steps else (epochs[-1] if epochs else {})

    measured = [r for r in epochs if _finite(r.get("knn_top1")) is not None]
    last_knn = measured[-1] if measured else {}
    knn_top1, knn_top5 = _finite(last_knn.get("knn_top1")), _finite(last_knn.get("knn_top5"))
    knn_epoch = _finite(last_knn.get("epoch"))
    if _finite(final.get("knn_top1")) is not None:  # the final record wins; its top-5 may be missing
        same_epoch = _finite(final.get("epoch")) == knn_epoch
        knn_top1, knn_epoch = _finite(final["knn_top1"]), _finite(final.get("epoch"))
        final_top5 = _finite(final.get("knn_top5"))
        knn_top5 = final_top5 if final_top5 is not None else (knn_top5 if same_epoch else None)

    every = [r for records in metrics.values() for r in records]
    logged_steps = [s for r in every if (s := _finite(r.get("step"))) is not None]
    completed = [e for r in [*epochs, final] if (e := _finite(r.get("epoch"))) is not None]
    times = [t for r in every if (t := _finite(r.get("time"))) is not None]
    minutes = _finite(final.get("minutes"))
    if minutes is None and len(times) >= 2:
        minutes = (max(times) - min(times)) / 60
    throughput = [v for r in steps if (v := _finite(r.get("images_per_s"))) is not None]
    nonfinite = [int(step) for r in steps if (loss := _number(r.get("loss"))) is not None
                 and not math.isfinite(loss) and (step := _finite(r.get("step"))) is not None]

    best = next((r for r in reversed(epochs) if r.get("best") is True), {})  # the latest new best is the best
    return RunSummary(
        best_epoch=int(best["epoch"]) if _finite(best.get("epoch")) is not None else None,
        best_uniformity=_finite(best.get("uniformity")),
        last_loss=_number(last.get("loss")),
        last_accuracy=_number(last.get("accuracy")),
        knn_top1=knn_top1,
        knn_top5=knn_top5,
        knn_epoch=int(knn_epoch) if knn_epoch is not None else None,
        baseline_top1=_finite(baseline.get("knn_top1", final.get("baseline_top1"))),
        baseline_top5=_finite(baseline.get("knn_top5")),
        pixel_top1=_finite(pixels.get("pixel_top1", final.get("pixel_top1"))),
        pixel_top5=_finite(pixels.get("pixel_top5")),
        initial_weights=given_init(metrics),
        epochs=int(max(completed, default=0)),
        steps=int(max(logged_steps, default=0)),
        minutes=minutes,
        mean_images_per_s=statistics.fmean(throughput) if throughput else None,
        started=min(times) if times else None,
        first_nonfinite_loss_step=nonfinite[0] if nonfinite else None,
        seconds_spent={k: float(v) for k, v in spent.items() if _finite(v) is not None}
        if isinstance(spent, dict) else None,
        budget=budget,
    )
