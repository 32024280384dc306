"""One optimisation step of MoCo pretraining (`StepRunner`), with explicit arguments (no globals, no CLI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mocokit import distributed
from mocokit.models.moco import MoCo


@dataclass(frozen=True)
class StepResult:
    """One step's outcome, as device tensors (reading them back is the caller's choice: it costs a sync)."""

    loss: torch.Tensor  # 0-dim, detached
    accuracy: torch.Tensor  # 0-dim instance-discrimination top-1
    finite: torch.Tensor  # 0-dim bool: the loss and (without a loss scaler) every gradient were finite
    skipped: bool = False  # train.on_nonfinite=skip: the update was not applied, nothing reached the dictionary
    grad_norm: dict[str, torch.Tensor] | None = None  # the watched parameters' gradient norms, when measured
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # the model's other outputs (e.g. own_key_rate)


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
    # torch.compile (train.compile). The first step compiles; `on_compiled(seconds)` then gets that step's wall time,
    # compilation included. compile_scope (train.compile_scope): `networks` compiles each network of the step on its
    # own (MoCo.networks: backbones, heads, predictor; used by the step's forward only), `step` the whole forward.
    compile: bool = False
    compile_scope: str = "networks"
    compile_backend: str = "inductor"  # torch.compile's backend: "aot_eager" traces without generating code
    on_compiled: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        self._trained_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.moco: MoCo = getattr(self.model, "module", self.model)  # the MoCo itself (under DDP: its `module`)
        self._forward = self.model
        self.compiled = False
        self._compile_pending = False
        self._compiled_calls: list[tuple[nn.Module, Callable]] = []
        if self.compile:
            self.set_compiled(True)
        # m reaches the model as a 0-dim device tensor refilled each step: a changing float (v3's schedule) would be
        # a constant of the compiled graph and recompile it every step. float64, so 1 − m stays exact near m = 1.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64  # MPS has no float64
        self._momentum = torch.zeros((), dtype=dtype, device=self.device)

    def set_compiled(self, on: bool) -> None:
        """Compile the step (or go back to eager) from the next step on. The first compiled step compiles, and
        `on_compiled` gets its wall time. Going back keeps no compiled code in the call path (train.compile=auto
        does when compiling measured no faster)."""
        if on == self.compiled:
            return
        if self.compile_scope == "step":
            self._forward = torch.compile(self.model, backend=self.compile_backend) if on else self.model
        else:  # compiled calls of each network, put in place for the step's forward only (see _networks_compiled)
            self._compiled_calls = [(n, torch.compile(n._call_impl, backend=self.compile_backend))
                                   for n in self.moco.networks()] if on else []
        self.compiled = self._compile_pending = on

    def _networks_compiled(self) -> AbstractContextManager:
        """Inside: each network runs its compiled call (what nn.Module.compile sets, torch >= 2.2), so that the kNN
        monitor, the dictionary fill and evaluation, which call the same networks in other modes and batch sizes,
        stay eager and never trigger a compile of their own. Eager steps enter nothing (the hot path)."""
        return self._compiled_calls_in_place() if self._compiled_calls else nullcontext()

    @contextmanager
    def _compiled_calls_in_place(self) -> Iterator[None]:
        for network, call in self._compiled_calls:
            network._compiled_call_impl = call
        try:
            yield
        finally:
            for network, _ in self._compiled_calls:
                network._compiled_call_impl = None

    @property
    def needs_indices(self) -> bool:
        """Whether the model reads the images' dataset indices (the memory-bank dictionary)."""
        return self.moco.needs_indices

    def views(self, batch_views: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # batched backend: uint8 N×C×R×R items (data/datasets.py BatchItem): C = 4 where a fourth channel marks each
        # image's extent in its square (non-square images), C = 3 for datasets known square. Augmented on the device.
        if self.batch_augment is not None:
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
        with self.autocast(), self._networks_compiled():
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
        stats = {name: value.detach() for name, value in out.items() if name not in ("loss", "accuracy")}
        result = StepResult(loss.detach(), out["accuracy"], finite, stats=stats)
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
