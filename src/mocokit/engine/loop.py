"""One optimisation step and one epoch of MoCo pretraining, with explicit arguments (no globals, no CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mocokit.models.moco import MoCo


@dataclass
class StepRunner:
    """Runs one MoCo step: views to the device (augmented there for the batched backend), forward with the given
    momentum (the model updates its key encoder and queue inside), backward, optional clipping, optimiser step."""

    model: nn.Module  # a MoCo, or MoCo wrapped by DistributedDataParallel
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast: Callable[[], AbstractContextManager]
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False
    grad_clip: float | None = None
    batch_augment: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    watched: dict[str, nn.Parameter] = field(default_factory=dict)  # parameters whose gradient norm is logged

    def __post_init__(self) -> None:
        self._trained_params = [p for group in self.optimizer.param_groups for p in group["params"]]

    def views(self, batch_views: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_augment is not None:  # uint8 N×3×H×W, augmented on the device
            view1, view2 = self.batch_augment(batch_views.to(self.device, non_blocking=True))
        else:
            view1, view2 = (v.to(self.device, non_blocking=True) for v in batch_views)
        if self.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        return view1, view2

    def __call__(self, batch_views: Any, lr: float, momentum: float, measure_grads: bool = False) -> dict:
        view1, view2 = self.views(batch_views)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with self.autocast():
            out = self.model(view1, view2, momentum=momentum)
        self.optimizer.zero_grad(set_to_none=True)
        loss = out["loss"]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # true gradients for clipping and logging
        else:
            loss.backward()
        result = {"loss": loss.detach(), "accuracy": out["accuracy"]}
        if measure_grads:
            result["grad_norm"] = {
                name: torch.linalg.vector_norm(p.grad.detach()) if p.grad is not None else torch.zeros(())
                for name, p in self.watched.items()
            }
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._trained_params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return result


def watched_parameters(model: MoCo) -> dict[str, nn.Parameter]:
    """The first and last trainable weight of the backbone and the last of the head: where ViT instability shows
    first (Chen, Xie, He 2021, section 4.1) and where a collapse shows."""
    backbone = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad and p.ndim > 1]
    head = [(n, p) for n, p in model.encoder.head.named_parameters() if p.requires_grad and p.ndim > 1]
    watched = {}
    if backbone:
        watched[f"backbone.{backbone[0][0]}"] = backbone[0][1]
        watched[f"backbone.{backbone[-1][0]}"] = backbone[-1][1]
    if head:
        watched[f"head.{head[-1][0]}"] = head[-1][1]
    return watched


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the first bad step."""


@dataclass
class EpochResult:
    steps: int  # steps run in this call
    loss_sum: float
    accuracy_sum: float
    seconds: float
    stopped_early: bool  # train.stop_at_step reached, or a graceful stop was requested


def train_one_epoch(
    run_step: StepRunner,
    loader: Iterable,
    first_step: int,
    lr_at: Callable[[int], float],
    momentum_at: Callable[[int], float],
    log_every: int,
    on_log: Callable[[int, dict], None],
    checkpoint_every: int,
    on_checkpoint: Callable[[int], None],
    stop_at_step: int | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    progress=None,
) -> EpochResult:
    """Steps over `loader`; global step numbers start after `first_step` (steps done before). Reads results back
    from the device only every `log_every` steps (and at the end), so the hot path has no host-device sync.
    `on_checkpoint(step)` is called every `checkpoint_every` steps (0: never), after checking the loss is finite.
    Raises NonFiniteLoss naming the first step whose loss was NaN or infinite."""
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    accuracy_sum = torch.zeros((), dtype=torch.float64)
    first_bad_step = torch.zeros((), dtype=torch.long)
    window_images, window_start = 0, time.perf_counter()
    step, steps = first_step, 0
    for views, _labels, indices in loader:
        step += 1
        steps += 1
        measure = step % log_every == 0
        lr, m = lr_at(step - 1), momentum_at(step - 1)
        result = run_step(views, lr, m, measure_grads=measure)
        loss = result["loss"].float()
        if loss_sum.device != loss.device:
            loss_sum, accuracy_sum, first_bad_step = (t.to(loss.device) for t in (loss_sum, accuracy_sum,
                                                                                  first_bad_step))
        loss_sum += loss
        accuracy_sum += result["accuracy"]
        bad = (~torch.isfinite(loss)) & (first_bad_step == 0)
        first_bad_step = torch.where(bad, torch.full_like(first_bad_step, step), first_bad_step)
        window_images += len(indices)
        if progress is not None:
            progress.update(1)
        stop = (stop_at_step is not None and step >= stop_at_step) or stop_requested()
        if measure or stop:
            _raise_if_non_finite(first_bad_step)
            now = time.perf_counter()
            record = {
                "loss": loss.item(),
                "accuracy": result["accuracy"].item(),
                "lr": lr,
                "momentum": m,
                "images_per_s": window_images / max(now - window_start, 1e-9),
            }
            if "grad_norm" in result:
                record["grad_norm"] = {name: value.item() for name, value in result["grad_norm"].items()}
            on_log(step, record)
            if progress is not None:
                progress.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
            window_images, window_start = 0, now
        if checkpoint_every and step % checkpoint_every == 0 and not stop:
            _raise_if_non_finite(first_bad_step)  # never checkpoint weights that a NaN step has already spoiled
            on_checkpoint(step)
        if stop:
            break
    _raise_if_non_finite(first_bad_step)
    return EpochResult(steps, float(loss_sum), float(accuracy_sum), time.perf_counter() - start,
                       stopped_early=(stop_at_step is not None and step >= stop_at_step) or stop_requested())


def _raise_if_non_finite(first_bad_step: torch.Tensor) -> None:
    bad = int(first_bad_step)
    if bad:
        raise NonFiniteLoss(
            f"the loss became NaN or infinite at step {bad}; training stopped and the last good checkpoint is "
            "kept. Lower optim.lr, add optim.grad_clip, or use train.precision=fp32."
        )
