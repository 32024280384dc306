"""What the step benchmark measures: time per step (variants alternated), FLOPs, a matrix product's FLOP/s, and the
peak memory of a step. Plain functions over `step()` callables, for CPUs and CUDA GPUs."""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

Step = Callable[[], object]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Step, steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps (the device drained before and after)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def alternate(samplers: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """`reps` samples of each sampler (a call that measures and returns seconds per step). The samplers take turns,
    in an order that reverses at every repetition (A B, B A, A B, ...), so slow drifts of a shared machine fall on
    both alike."""
    names = list(samplers)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            samples[name].append(samplers[name]())
    return samples


def summary(values: list[float]) -> dict[str, float]:
    """Median and spread ((max − min) / median) of a list of samples."""
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / median if median else 0.0, "n": len(values)}


def count_flops(step: Step) -> int:
    """Matrix-multiply and convolution FLOPs (torch.utils.flop_counter: 2 per multiply-add) of one call of `step`,
    forward and backward. Run it on meta tensors to count without computing."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096,
                       reps: int = 5) -> list[float]:
    """FLOP/s of an n×n by n×n matrix product (2n³ FLOPs), `reps` samples after one warm-up: the practical compute
    limit of the device for dense work."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        seconds = timed(lambda: torch.mm(a, b), 1, device)
        rates.append(2 * n**3 / seconds)
    return rates


def step_peak_bytes(step: Step, device: torch.device) -> int:
    """Bytes of tensor memory the peak of one call of `step` reaches above what is allocated just before it
    (activations, gradients, temporaries): what the allocator hands out, whatever the C library or the caching
    allocator keeps around it. CUDA: the caching allocator's statistics. CPU: the allocation and free events the
    CPU allocator reports to the profiler, summed in time order."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = [e for e in profiler.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # > 0: an allocation; < 0: a free
        peak = max(peak, live)
    return peak


def step_peak_resident_bytes(step: Step) -> int | None:
    """CPU (Linux): bytes the process's resident set peaks at during one call of `step`, above its size just before
    (reset after returning free heap pages to the system with malloc_trim). Unlike `step_peak_bytes` this includes
    what the C library keeps (fragmentation, freed blocks kept for reuse); None where it cannot be measured."""
    gc.collect()
    if not _reset_resident_peak():
        return None
    before = _status_bytes("VmRSS")
    step()
    return _status_bytes("VmHWM") - before


def _reset_resident_peak() -> bool:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: resets VmHWM to the current VmRSS
    except (OSError, AttributeError):
        return False
    return True


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")
