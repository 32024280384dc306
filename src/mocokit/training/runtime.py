"""Where and how the step runs: device and numeric precision (threads, seeds and determinism are process-wide:
training/process.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch

from mocokit.config.loader import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is available here; use train.device=cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name} but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "cuda" and device.index is None:  # the process's own GPU (under torchrun: its LOCAL_RANK)
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type in ("mps", "xpu") and not getattr(torch, device.type).is_available():
        raise ConfigError(f"train.device={name} but no {device.type} device is available here; use cpu or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: plain fp32). auto: bf16 on CUDA GPUs that support it, else fp32."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type != "cuda" and dtype == torch.float16:
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return dtype


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], AbstractContextManager]:
    if dtype is None:
        return nullcontext
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    return dtype == torch.float16
