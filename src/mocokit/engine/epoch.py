"""One epoch of MoCo pretraining: the steps, and around them what an epoch watches (NaN steps, throughput, the
log and checkpoint cadence, stopping), each in a small piece of its own."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mocokit import distributed
from mocokit.engine.step import StepResult, StepRunner, all_ranks_true, nonfinite_buffers
from mocokit.errors import NonFiniteLoss
from mocokit.training.faults import fault_point


class SkippedStepWarning(UserWarning):
    """train.on_nonfinite=skip: a step was not applied because its loss or gradients were not finite."""


@dataclass(frozen=True)
class Schedule:
    """The step's hyper-parameters as functions of the global step (0-based, the step about to run)."""

    lr_at: Callable[[int], float]
    momentum_at: Callable[[int], float]


@dataclass(frozen=True)
class EpochHooks:
    """What the epoch reports and when it stops. `on_log(step, record)` every `log_every` steps (and at a stop);
    `on_checkpoint(step)` every `checkpoint_every` steps (0: never), never after a non-finite step."""

    log_every: int
    on_log: Callable[[int, dict], None] = lambda step, record: None
    checkpoint_every: int = 0
    on_checkpoint: Callable[[int], None] = lambda step: None
    stop_at_step: int | None = None  # train.stop_at_step: the last step to run
    stop_requested: Callable[[], bool] = lambda: False  # a graceful stop (Ctrl-C, SIGTERM), agreed by all ranks
    progress: Any = None  # a tqdm bar, or None
    on_step: Callable[[int], None] = lambda step: None  # after each step, before its log (the time budget's clock)
    # the run's last step when it may end inside an epoch (a time budget's plan); read after each step, since the plan
    # is fixed during the first epoch. None: the run ends at an epoch end.
    last_step: Callable[[], int | None] = lambda: None

    def stops_after(self, step: int) -> bool:
        return (self.stop_at_step is not None and step >= self.stop_at_step) or self.stop_requested()

    def ends_after(self, step: int) -> bool:
        """The run's planned end: not a stop (the run is complete there)."""
        last = self.last_step()
        return last is not None and step >= last


@dataclass
class EpochResult:
    steps: int  # steps run in this call
    loss_sum: float
    accuracy_sum: float
    seconds: float
    stopped_early: bool  # train.stop_at_step reached, or a graceful stop was requested
    skipped: int = 0  # steps not applied (train.on_nonfinite=skip); loss_sum and accuracy_sum leave them out
    stats_sum: dict[str, float] = field(default_factory=dict)  # the steps' other outputs (own_key_rate), summed

    @property
    def mean_stats(self) -> dict[str, float]:
        return {name: total / max(self.steps - self.skipped, 1) for name, total in self.stats_sum.items()}

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps - self.skipped, 1)

    @property
    def mean_accuracy(self) -> float:
        return self.accuracy_sum / max(self.steps - self.skipped, 1)


def train_one_epoch(run_step: StepRunner, loader: Iterable, first_step: int, schedule: Schedule,
                    hooks: EpochHooks) -> EpochResult:
    """Steps over `loader` (items: views, labels, indices); global step numbers start after `first_step` (steps done
    before). Reads results back from the device only when logging (and at the end), so the hot path has no
    host-device sync. Raises NonFiniteLoss naming the first step whose loss or gradients were not finite; with a
    StepRunner that skips them (train.on_nonfinite=skip), each skipped step is named in a SkippedStepWarning
    instead, and NonFiniteLoss is raised only if the model's buffers were spoiled anyway."""
    start = time.perf_counter()
    totals, watch, window = _Totals(), _NonFiniteWatch(), _Throughput()
    step = first_step
    if hooks.stop_at_step is not None and step >= hooks.stop_at_step:  # resumed at or past it: no step beyond
        return EpochResult(0, 0.0, 0.0, time.perf_counter() - start, stopped_early=True)
    if hooks.ends_after(step):  # resumed at the planned end (a checkpoint of its last step): the epoch is over
        return EpochResult(0, 0.0, 0.0, time.perf_counter() - start, stopped_early=False)
    for views, _labels, indices in loader:
        step += 1
        measure = step % hooks.log_every == 0
        lr, m = schedule.lr_at(step - 1), schedule.momentum_at(step - 1)
        result = run_step(views, lr, m, measure_grads=measure, indices=indices if run_step.needs_indices else None)
        fault_point("step")
        if result.skipped:
            _check_skipped_step(run_step.model, step)
        else:
            watch.record(step, result.finite)
        totals.add(result)
        window.count(len(indices))
        if hooks.progress is not None:
            hooks.progress.update(1)
        hooks.on_step(step)
        stop, end = hooks.stops_after(step), hooks.ends_after(step)
        if measure or stop or end:
            watch.raise_if_any()
            record = _log_record(result, lr, m, window.images_per_s())
            hooks.on_log(step, record)
            if hooks.progress is not None:
                hooks.progress.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
        if hooks.checkpoint_every and step % hooks.checkpoint_every == 0 and not (stop or end):
            watch.raise_if_any()  # never checkpoint weights that a NaN step has already spoiled
            hooks.on_checkpoint(step)
        if stop or end:
            break
    watch.raise_if_any()
    loss_sum, accuracy_sum, stats_sum = totals.reduced()
    return EpochResult(step - first_step, loss_sum, accuracy_sum, time.perf_counter() - start,
                       stopped_early=hooks.stops_after(step), skipped=totals.skipped, stats_sum=stats_sum)


def _log_record(result: StepResult, lr: float, momentum: float, images_per_s: float) -> dict:
    record = {
        "loss": distributed.all_reduce_mean(result.loss.float()).item(),  # over all processes' batches
        "accuracy": distributed.all_reduce_mean(result.accuracy).item(),
        "lr": lr,
        "momentum": momentum,
        "images_per_s": images_per_s,
    }
    for name, value in result.stats.items():
        record[name] = distributed.all_reduce_mean(value.float()).item()
    if result.grad_norm is not None:
        record["grad_norm"] = {name: value.item() for name, value in result.grad_norm.items()}
    return record


@dataclass
class _Totals:
    """Running sums of the applied steps' loss and accuracy, on the device (no sync per step)."""

    loss: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    accuracy: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: int = 0

    def add(self, result: StepResult) -> None:
        if result.skipped:
            self.skipped += 1
            return
        if self.loss.device != result.loss.device:
            self.loss, self.accuracy = self.loss.to(result.loss.device), self.accuracy.to(result.loss.device)
        self.loss += result.loss.float()
        self.accuracy += result.accuracy
        for name, value in result.stats.items():
            self.stats[name] = self.stats.get(name, 0.0) + value.double()

    def reduced(self) -> tuple[float, float, dict[str, float]]:
        """The sums averaged over the processes."""
        stats = {name: float(distributed.all_reduce_mean(value)) for name, value in self.stats.items()}
        return float(distributed.all_reduce_mean(self.loss)), float(distributed.all_reduce_mean(self.accuracy)), stats


class _NonFiniteWatch:
    """The first step whose loss or gradients were not finite, kept on the device until it is checked."""

    def __init__(self) -> None:
        self.first_bad_step = torch.zeros((), dtype=torch.long)

    def record(self, step: int, finite: torch.Tensor) -> None:
        if self.first_bad_step.device != finite.device:
            self.first_bad_step = self.first_bad_step.to(finite.device)
        bad = (~finite) & (self.first_bad_step == 0)
        self.first_bad_step = torch.where(bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)

    def raise_if_any(self) -> None:
        """Every process calls this at the same steps; they agree on the earliest bad step of any of them, so all
        stop together (a NaN on one rank spoils every rank's weights through the gradient all-reduce)."""
        never = torch.iinfo(self.first_bad_step.dtype).max
        earliest = torch.where(self.first_bad_step == 0, torch.full_like(self.first_bad_step, never),
                               self.first_bad_step)
        earliest = -distributed.all_reduce_max_(-earliest)  # the minimum over ranks
        bad = 0 if int(earliest) == never else int(earliest)
        if bad:
            raise NonFiniteLoss(
                f"the loss or the gradients became NaN or infinite at step {bad}; training stopped and the last "
                "good checkpoint is kept. Lower optim.lr, add optim.grad_clip, use train.precision=fp32, or skip "
                "such steps with train.on_nonfinite=skip."
            )


class _Throughput:
    """Images per second since the last reading."""

    def __init__(self) -> None:
        self.images, self.since = 0, time.perf_counter()

    def count(self, images: int) -> None:
        self.images += images

    def images_per_s(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.since, 1e-9)
        self.images, self.since = 0, now
        return rate


def _check_skipped_step(model: nn.Module, step: int) -> None:
    """A skipped step left the weights and optimiser untouched, but its forward pass already wrote the model's
    buffers (BatchNorm statistics): if those became non-finite, skipping cannot help and training stops."""
    spoiled = nonfinite_buffers(model)
    if not all_ranks_true(torch.tensor(not spoiled)):
        raise NonFiniteLoss(
            f"step {step}: the loss or the gradients were NaN or infinite and the update was skipped "
            f"(train.on_nonfinite=skip), but the model's buffers already hold NaN or infinite values "
            f"({', '.join(spoiled[:3]) or 'on another process'}), which skipping cannot undo; training stopped and "
            "the last good checkpoint is kept. Lower optim.lr, add optim.grad_clip, or use train.precision=fp32."
        )
    warnings.warn(f"step {step}: the loss or the gradients were NaN or infinite; the update was skipped "
                  "(train.on_nonfinite=skip)", SkippedStepWarning, stacklevel=3)
