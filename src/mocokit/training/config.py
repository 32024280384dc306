"""The training sections of a mocokit config: `optim:`, `train:`, `run:` and `monitor:`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

# h, m and s parts in that order, each a decimal number, at least one part: 20m, 1h30m, 90s, 1.5h, 2h 15m 30s
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)\s*h)?\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*m)?\s*"
                       r"(?:(\d+(?:\.\d*)?|\.\d+)\s*s)?")


def parse_duration(value: str | float | int) -> float:
    """Seconds in a duration: a number of seconds (3600, 90.5, "3600") or hour/minute/second parts in that order
    ("20m", "1h30m", "90s", "1.5h", "2h 15m 30s"). ValueError naming the accepted forms for anything else
    ("20 minutes", "1m1h", "", a negative, zero or infinite duration)."""
    text = str(value).strip().lower()
    seconds: float | None = None
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text)
        if match and any(match.groups()):
            hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
            seconds = 3600 * hours + 60 * minutes + secs
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration: write seconds (3600) or hours, minutes and seconds in that "
                         "order (20m, 1h30m, 90s, 1.5h)")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{value!r} is not a positive, finite duration")
    return seconds


@dataclass
class OptimConfig:
    name: Literal["sgd", "lars", "adamw"] = "sgd"  # v1/v2: SGD; v3 ResNet: LARS; v3 ViT: AdamW
    lr: float = 0.03  # base learning rate at a global batch of 256 (see scale_lr)
    scale_lr: bool = True  # linear scaling rule: lr = base lr × global batch / 256 (logged as the derived value)
    momentum: float = 0.9  # SGD and LARS momentum
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (v3 ViT: 0.9, 0.95)
    weight_decay: float = 1e-4
    # No weight decay for biases and normalisation parameters (1-D tensors). LARS always excludes them from both
    # weight decay and trust-ratio scaling, as the reference does.
    no_decay_bias_and_norm: bool = False
    lars_trust: float = 0.001  # LARS trust coefficient η
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # per iteration, after the warm-up
    warmup_epochs: float = 0.0  # linear warm-up from 0 (v3: 10 for ResNet, 40 for ViT)
    milestones: list[float] = field(default_factory=list)  # step schedule: epochs where lr is multiplied by gamma
    gamma: float = 0.1  # step schedule factor
    grad_clip: float | None = None  # clip the global gradient norm to this value (None: no clipping)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("optim.schedule=step needs optim.milestones, e.g. [120, 160]")


MAX_THREADS = 1024  # far above any CPU's core count; PyTorch accepts up to 2**31 - 1 threads, then crashes at exit


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 256  # global batch size: summed over all processes
    seed: int = 0
    deterministic: bool = False  # seeded, deterministic kernels: a resumed run ends with the same weights
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:1, ...
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA GPUs that have it, else fp32
    # NHWC memory format for convolutional backbones: for GPUs with AMP. Off by default: on the 2-core CPU measured
    # here it made the ResNet-18 step slower, with or without BatchNorm groups (README, Performance).
    channels_last: bool = False
    # torch.compile the step; the compiling step's time is logged. auto: decided from what compiling measured on
    # this machine for the same model (a ledger in mocokit's cache); with nothing measured yet, the run times eager
    # steps, compiles if the rest of the run can repay it, times compiled steps and keeps the faster form
    # (training/compilation.py, README Performance). Compiled kernels are kept in <cache>/inductor.
    compile: bool | Literal["auto"] = "auto"
    # What is compiled: networks (each backbone, head and predictor on its own; the momentum update, shuffle, loss
    # and dictionary stay eager) or step (the whole forward as one graph: slower to compile, measured no faster)
    compile_scope: Literal["networks", "step"] = "networks"
    threads: int | None = None  # CPU threads for PyTorch (None: PyTorch's default)
    stop_at_step: int | None = None  # end early after this global step, as if interrupted (the run can resume)
    # A step whose loss or gradients are NaN or infinite. stop: the run ends naming the step (checked at log and
    # checkpoint points, no per-step sync), the last good checkpoint is kept. skip: that step's update is not applied
    # and the step is named in a warning (one host sync per step); the run still stops if the step already spoiled
    # the model's buffers (queue, BatchNorm statistics).
    on_nonfinite: Literal["stop", "skip"] = "stop"
    # A wall-clock budget for the whole pretrain command, setup and kNN/health evaluations included. The run times
    # its first steps, then fixes its number of steps (train.epochs is ignored; the last epoch may be partial) and
    # lays the warm-up, cosine and momentum schedules over exactly those; the plan is kept in the checkpoint, so a
    # resumed run follows the first one's plan (engine/budget.py).
    time_budget: str | None = None  # wall-clock budget of the run: 20m, 1h30m, 90s or seconds (null: train.epochs)

    @property
    def time_budget_seconds(self) -> float | None:
        """train.time_budget in seconds (None: no budget)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)

    def __post_init__(self) -> None:
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except ValueError as error:
                raise ValueError(f"train.time_budget: {error}") from None
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.compile not in (True, False, "auto"):
            raise ValueError(f"train.compile must be true, false or auto, got {self.compile!r}")
        if self.compile_scope not in ("networks", "step"):
            raise ValueError(f"train.compile_scope must be networks or step, got {self.compile_scope!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"train.on_nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        if self.device != "auto":
            import torch

            try:
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError, TypeError):
                kind = None
            if kind not in ("cpu", "cuda", "mps", "xpu"):
                raise ValueError(f"train.device must be auto, cpu, cuda, cuda:<index>, mps or xpu, got {self.device!r}")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ValueError(f"train.stop_at_step must be >= 1 or null, got {self.stop_at_step}")
        if self.threads is not None and not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"train.threads must be between 1 and {MAX_THREADS} or null, got {self.threads}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"train.seed must be between 0 and 2**32 - 1 (NumPy's seed range), got {self.seed}")


@dataclass
class RunConfig:
    dir: str = ""  # run folder; empty: runs/<config name>-<timestamp>
    checkpoint_every_steps: int = 0  # also write `last` every N steps (0: only at the end of each epoch)
    keep_every_epochs: int = 0  # keep a copy of the checkpoint every M epochs (0: keep only `last`)
    log_every_steps: int = 10  # a step record in metrics.jsonl every N steps
    tensorboard: bool = True
    progress: bool | None = None  # progress bar; None: only when printing to a terminal

    def __post_init__(self) -> None:
        for name in ("checkpoint_every_steps", "keep_every_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")
        if self.log_every_steps < 1:
            raise ValueError(f"run.log_every_steps must be >= 1, got {self.log_every_steps}")


@dataclass
class MonitorDataConfig:
    # a labelled ImageFolder for the kNN monitor instead of the training data's splits (DIR/train/<class>/ and
    # DIR/test/<class>/, or DIR/<class>/ split 80/20 by train.seed): pretrain on unlabelled images, label a few hundred
    path: str | None = None  # labelled ImageFolder for the kNN monitor (None: the training data's own splits)


@dataclass
class MonitorConfig:
    knn_every_epochs: int = 1  # online kNN accuracy every N epochs (0: never); needs a labelled test split
    knn_k: int = 200  # neighbours
    knn_temperature: float = 0.1  # τ in the weights exp(similarity / τ)
    knn_bank_size: int | None = None  # use at most this many training images as the feature bank (None: all)
    knn_query_size: int | None = None  # evaluate at most this many test images (None: all)
    data: MonitorDataConfig = field(default_factory=MonitorDataConfig)  # the kNN monitor's own labelled images
    knn_baseline: bool = True  # also measure the kNN at random initialisation and on raw pixels once, before training
    # Label-free health: effective rank of the backbone features, alignment, uniformity and mean per-dimension std
    # of the normalised head outputs, on a fixed seeded sample of training images (two augmented views each). Warns
    # when the rank or the std falls below half its previous value (collapse). At most a fifth of the training set
    # (at least 64 images) is used, which keeps the cost under ~5% of an epoch (engine/health_monitor.py).
    health_images: int = 512  # training images for the label-free health metrics (rank, uniformity, ...); 0: off
    health_every_epochs: int = 1  # measure the label-free health metrics every N epochs

    def __post_init__(self) -> None:
        if self.knn_every_epochs < 0:
            raise ValueError(f"monitor.knn_every_epochs must be >= 0, got {self.knn_every_epochs}")
        if self.health_images < 0:
            raise ValueError(f"monitor.health_images must be >= 0 (0: off), got {self.health_images}")
        if self.health_every_epochs < 1:
            raise ValueError(f"monitor.health_every_epochs must be >= 1, got {self.health_every_epochs}")
        if self.knn_k < 1:
            raise ValueError(f"monitor.knn_k must be >= 1, got {self.knn_k}")
        if self.knn_temperature <= 0:
            raise ValueError(f"monitor.knn_temperature must be > 0, got {self.knn_temperature}")
