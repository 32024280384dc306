"""One optimisation step and one epoch of MoCo pretraining, with explicit arguments (no globals, no CLI)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mocokit import distributed
from mocokit.errors import NonFiniteLoss
from mocokit.models.moco import MoCo
from mocokit.training.faults import fault_point


@dataclass(frozen=True)
class StepResult:
    """One step's outcome, as device tensors (reading them back is the caller's choice: it costs a sync)."""

    loss: torch.Tensor  # 0-dim, detached
    accuracy: torch.Tensor  # 0-dim instance-discrimination top-1
    finite: torch.Tensor  # 0-dim bool: the loss and (without a loss scaler) every gradient were finite
    skipped: bool = False  # train.on_nonfinite=skip: the update was not applied, nothing reached the dictionary
    grad_norm: dict[str, torch.Tensor] | None = None  # the watched parameters' gradient norms, when measured


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
    # train.on_nonfinite=skip: a step whose loss or gradients are not finite is not applied (costs one host sync per
    # step, to decide). Off (stop): the step's finiteness is only returned, as a device tensor, for the caller.
    skip_nonfinite: bool = False
    # torch.compile the model's forward (train.compile). The first step compiles; `on_compiled(seconds)` then gets
    # that step's wall time, compilation included.
    compile: bool = False
    on_compiled: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        self._trained_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._forward = torch.compile(self.model) if self.compile else self.model
        self._compile_pending = self.compile
        # m reaches the model as a 0-dim device tensor refilled each step: a changing float (v3's schedule) would be
        # a constant of the compiled graph and recompile it every step. float64, so 1 − m stays exact near m = 1.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        self._momentum = torch.zeros((), dtype=dtype, device=self.device)
        self.moco: MoCo = getattr(self.model, "module", self.model)  # the MoCo itself (under DDP: its `module`)

    @property
    def needs_indices(self) -> bool:
        """Whether the model reads the images' dataset indices (the memory-bank dictionary)."""
        return self.moco.needs_indices

    def views(self, batch_views: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_augment is not None:  # uint8 N×3×H×W, augmented on the device
            view1, view2 = self.batch_augment(batch_views.to(self.device, non_blocking=True))
        else:
            view1, view2 = (v.to(self.device, non_blocking=True) for v in batch_views)
        if self.channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        return view1, view2

    def __call__(self, batch_views: Any, lr: float, momentum: float, measure_grads: bool = False,
                 indices: torch.Tensor | None = None) -> StepResult:
        started = time.perf_counter()
        view1, view2 = self.views(batch_views)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self._momentum.fill_(momentum)
        with self.autocast():
            extra = {} if indices is None else {"indices": indices.to(self.device, non_blocking=True)}  # memory bank
            out = self._forward(view1, view2, momentum=self._momentum, **extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss = out["loss"]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # true gradients for clipping and logging
        else:
            loss.backward()
        self._after_backward(started)
        # This step's finiteness, on the device (no sync): the loss and, without a loss scaler, every gradient (with
        # one, non-finite gradients are the scaler's business: it skips those steps itself).
        finite = torch.isfinite(loss.detach())
        if self.scaler is None:
            finite = finite & gradients_finite(self._trained_params)
        result = StepResult(loss.detach(), out["accuracy"], finite)
        if self.skip_nonfinite and not all_ranks_true(finite):
            self.optimizer.zero_grad(set_to_none=True)
            self.moco.discard_step()  # nothing of a step that is not applied reaches the queue or memory bank
            if self.scaler is not None:
                self.scaler.update()  # closes this step for the scaler (it lowers its scale when it saw infinities)
            return replace(result, skipped=True)
        if measure_grads:
            result = replace(result, grad_norm={
                name: torch.linalg.vector_norm(p.grad.detach()) if p.grad is not None else torch.zeros(())
                for name, p in self.watched.items()
            })
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._trained_params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.moco.end_step()  # the queue's enqueue, the memory bank's update
        return result

    def _after_backward(self, started: float) -> None:
        if self._compile_pending:
            self._compile_pending = False
            if self.on_compiled is not None:
                self.on_compiled(time.perf_counter() - started)


def compile_enabled(setting: bool | str, device: torch.device) -> bool:
    """train.compile resolved for `device`: auto compiles on CUDA GPUs only (on a CPU, compiling a MoCo step takes
    many minutes; see README, Performance)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def gradients_finite(params: list[nn.Parameter]) -> torch.Tensor:
    """0-dim bool tensor on the parameters' device: every gradient is finite. One fused pass over the gradients
    (the check the fp16 loss scaler makes, with a scale of 1, which leaves them unchanged); no host sync."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    found_inf = torch.zeros(1, device=grads[0].device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch.ones(1, device=grads[0].device))
    return found_inf[0] == 0


def all_ranks_true(flag: torch.Tensor) -> bool:
    """Whether `flag` (0-dim bool) holds on every process: one host sync, and a collective on multi-process runs so
    that all processes take the same decision."""
    false_somewhere = (~flag).to(device=distributed.collective_device(), dtype=torch.int32)
    return not bool(distributed.all_reduce_max_(false_somewhere))


def nonfinite_buffers(model: nn.Module) -> list[str]:
    """Names of the floating-point buffers (queue, BatchNorm statistics, ...) holding NaN or infinite values."""
    return [name for name, buffer in model.named_buffers()
            if buffer.is_floating_point() and not bool(torch.isfinite(buffer).all())]


def watched_parameters(model: MoCo) -> dict[str, nn.Parameter]:
    """The first and last trainable layer weight of the backbone and the last of the head: where ViT instability
    shows first (Chen, Xie, He 2021, section 4.1: the patch projection) and where a collapse shows. Layer weights
    only (conv, linear: `*.weight` with 2+ dimensions), not the ViT's class token or position embedding, which
    timm registers before the patch projection."""

    def layer_weights(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in module.named_parameters() if p.requires_grad and p.ndim > 1
                and n.endswith("weight")]

    backbone, head = layer_weights(model.backbone), layer_weights(model.encoder.head)
    watched = {}
    if backbone:
        watched[f"backbone.{backbone[0][0]}"] = backbone[0][1]
        watched[f"backbone.{backbone[-1][0]}"] = backbone[-1][1]
    if head:
        watched[f"head.{head[-1][0]}"] = head[-1][1]
    return watched


class SkippedStepWarning(UserWarning):
    """train.on_nonfinite=skip: a step was not applied because its loss or gradients were not finite."""


@dataclass
class EpochResult:
    steps: int  # steps run in this call
    loss_sum: float
    accuracy_sum: float
    seconds: float
    stopped_early: bool  # train.stop_at_step reached, or a graceful stop was requested
    skipped: int = 0  # steps not applied (train.on_nonfinite=skip); loss_sum and accuracy_sum leave them out


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
    `on_checkpoint(step)` is called every `checkpoint_every` steps (0: never), after checking that no step so far
    had a NaN or infinite loss or gradient, so a spoiled state is never checkpointed. Raises NonFiniteLoss naming
    the first such step; with a StepRunner that skips them (train.on_nonfinite=skip), each skipped step is named in
    a SkippedStepWarning instead, and NonFiniteLoss is raised only if the model's buffers were spoiled anyway."""
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    accuracy_sum = torch.zeros((), dtype=torch.float64)
    first_bad_step = torch.zeros((), dtype=torch.long)
    window_images, window_start = 0, time.perf_counter()
    step, steps, skipped = first_step, 0, 0
    for views, _labels, indices in loader:
        step += 1
        steps += 1
        measure = step % log_every == 0
        lr, m = lr_at(step - 1), momentum_at(step - 1)
        result = run_step(views, lr, m, measure_grads=measure, indices=indices if run_step.needs_indices else None)
        fault_point("step")
        loss = result.loss.float()
        if loss_sum.device != loss.device:
            loss_sum, accuracy_sum, first_bad_step = (t.to(loss.device) for t in (loss_sum, accuracy_sum,
                                                                                  first_bad_step))
        if result.skipped:
            skipped += 1
            _check_skipped_step(run_step.model, step)
        else:
            loss_sum += loss
            accuracy_sum += result.accuracy
            bad = (~result.finite) & (first_bad_step == 0)
            first_bad_step = torch.where(bad, torch.full_like(first_bad_step, step), first_bad_step)
        window_images += len(indices)
        if progress is not None:
            progress.update(1)
        stop = (stop_at_step is not None and step >= stop_at_step) or stop_requested()
        if measure or stop:
            _raise_if_non_finite(first_bad_step)
            now = time.perf_counter()
            record = {
                "loss": distributed.all_reduce_mean(loss).item(),  # over all processes' batches
                "accuracy": distributed.all_reduce_mean(result.accuracy).item(),
                "lr": lr,
                "momentum": m,
                "images_per_s": window_images / max(now - window_start, 1e-9),
            }
            if result.grad_norm is not None:
                record["grad_norm"] = {name: value.item() for name, value in result.grad_norm.items()}
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
    loss_sum, accuracy_sum = distributed.all_reduce_mean(loss_sum), distributed.all_reduce_mean(accuracy_sum)
    return EpochResult(steps, float(loss_sum), float(accuracy_sum), time.perf_counter() - start,
                       stopped_early=(stop_at_step is not None and step >= stop_at_step) or stop_requested(),
                       skipped=skipped)


def _check_skipped_step(model: nn.Module, step: int) -> None:
    """A skipped step left the weights and optimiser untouched, but its forward pass already wrote the model's
    buffers (queue, BatchNorm statistics): if those became non-finite, skipping cannot help and training stops."""
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


def _raise_if_non_finite(first_bad_step: torch.Tensor) -> None:
    """Every process calls this at the same steps; they agree on the earliest bad step of any of them, so all stop
    together (a NaN on one rank spoils every rank's weights through the gradient all-reduce)."""
    never = torch.iinfo(first_bad_step.dtype).max
    earliest = torch.where(first_bad_step == 0, torch.full_like(first_bad_step, never), first_bad_step)
    earliest = -distributed.all_reduce_max_(-earliest)  # the minimum over ranks
    bad = 0 if int(earliest) == never else int(earliest)
    if bad:
        raise NonFiniteLoss(
            f"the loss or the gradients became NaN or infinite at step {bad}; training stopped and the last good "
            "checkpoint is kept. Lower optim.lr, add optim.grad_clip, use train.precision=fp32, or skip such steps "
            "with train.on_nonfinite=skip."
        )
