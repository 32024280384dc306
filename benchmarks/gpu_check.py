"""`make gpu-check`: a one-shot check of mocokit on one CUDA GPU, in at most 8 minutes (--budget), never interactive.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --data .devdata/cifar10-jpg.tar.gz --out gpu_check.json
    python benchmarks/gpu_check.py --tiny          # the same code paths at a tiny size (the CPU's default)

1. Training step, per model: MoCo v2 (v2-cifar10: ResNet-18, CIFAR stem, K=4096, symmetric, 8 BN groups), MoCo v3
   ResNet-18 (v3-cifar10) and MoCo v3 ViT-S/4 (v3-vit-cifar10), at 32 px, batch 256. Variants: fp32 eager (the
   reference), fp32 eager again (the run-to-run noise floor), bf16 autocast, channels_last and bf16+channels_last
   (ResNets), torch.compile (the engine's train.compile path, fp32), and the fastest combination
   (bf16+channels_last+compile; ViT: bf16+compile). Every variant starts from the same initial weights and queue
   (one model built once, its state_dict loaded into each) and trains on the same views (seeded random tensors) with
   the same shuffle-BN permutations (the global RNG reseeded before each step), so each step's loss is compared
   with fp32 eager's at the same step, against a tolerance stated in the JSON. Then images/s (warm-up excluded, the
   GPU synchronised around each timed group of steps), peak GPU memory of the timed steps, and the compile time.
2. A short CIFAR-10 MoCo v2 pretraining through mocokit's own CLI (`python -m mocokit pretrain v2-cifar10 ...`, bf16,
   channels_last, compiled, batched GPU augmentation), with the kNN monitor: kNN top-1 (and at random init), images/s,
   minutes. It is stopped gracefully (SIGTERM: the step finishes, a checkpoint is written) at --pretrain-seconds;
   the last kNN measured is then reported.
3. One JSON (--out) with the machine, every number above, each part's wall time, status and error, written after
   every variant and part (also when a part fails, and by a watchdog at the time limit); a compact table on stdout.

Time: each part is budgeted. Compilation is the expensive item (tens of seconds per graph on a GPU), so the compiled
variants run after all eager ones, most useful first, each only when its estimated time still fits before the time
reserved for the pretraining; one that does not fit is recorded as skipped with the reason. A watchdog writes the
JSON and exits at --budget seconds whatever is running. Exit status: 0 when everything that ran passed, 1 when a
check failed or a part raised, 3 when the watchdog stopped the run.

On a CPU (no CUDA) or with --tiny: the same code at a tiny size (width 0.125 / ViT depth 2, 16 px, batch 16, 2 steps;
bf16 autocast on the CPU too), compilation skipped on the CPU (it takes minutes there; --compile on forces it), and a
pretraining of two epochs on a synthetic 64-image ImageFolder.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
try:
    import mocokit  # noqa: F401
except ImportError:  # not installed and not on PYTHONPATH: the repository's own copy
    sys.path.insert(0, str(REPO / "src"))
    import mocokit  # noqa: F401

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DEFAULT_OUT = REPO / "benchmarks" / "gpu_check.json"
DEFAULT_TINY_OUT = REPO / "benchmarks" / "out" / "gpu_check-tiny.json"  # git-ignored

# Each step's loss against fp32 eager's at the same step: |loss - loss_fp32| / |loss_fp32|, the maximum over the steps.
TOLERANCES = {
    # Same arithmetic in fp32 (TF32 off), only the order of sums differs (cuDNN algorithm choice, NHWC kernels,
    # Inductor's fused and reordered reductions): a few training steps stay within 1e-3 relative. Larger means a
    # different computation, not rounding. fp32 eager against itself shows the noise floor (fp32_repeat).
    "fp32": {"relative": 1e-3, "why": "fp32 with TF32 off: only the order of floating-point sums differs"},
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3 per operation); a ResNet/ViT forward and a few
    # optimiser steps on bf16 activations move the loss by up to about 1%; 5e-2 catches a broken path (a wrong
    # cast, a loss in bf16 overflowing, an exploding step), not rounding.
    "bf16": {"relative": 5e-2, "why": "bf16 autocast: 8-bit mantissa activations; loose, catches broken paths only"},
}
BUDGET_SECONDS = 480  # the whole run, watchdog included (8 minutes)
PRETRAIN_SECONDS = 150  # the pretraining's own cap (then SIGTERM: graceful stop)
STOP_GRACE_SECONDS = 30  # after SIGTERM: the current step (or kNN evaluation) finishes and a checkpoint is written
MARGIN_SECONDS = 15  # kept free at the end: writing the JSON, printing
FIRST_COMPILE_ESTIMATE = 75.0  # seconds a compiled variant is expected to take until one has been measured


# ====================================================================================================================
# mocokit internals: the ONLY code in this script that knows them (the engine is being refactored: StepRunner's
# result may become a dataclass with .loss, modules may move from mocokit.engine to mocokit.training, the step may
# call model.end_step() after the optimiser: StepRunner does whatever the engine does). Adapt here only. The
# pretraining uses the CLI (PRETRAIN_COMMAND), a stable entry point.
# ====================================================================================================================

PRETRAIN_COMMAND = [sys.executable, "-m", "mocokit", "pretrain"]  # + CONFIG key=value ... --json


def _first_import(name: str, *modules: str):
    errors = []
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            errors.append(f"{module}: {error}")
    raise ImportError(f"cannot import {name}: " + "; ".join(errors))


def reference_state(preset: str, overrides: list[str]) -> dict[str, torch.Tensor]:
    """The initial weights, BatchNorm statistics and queue that every variant of a model starts from."""
    from mocokit import build_model, load_config

    torch.manual_seed(0)
    model = build_model(load_config(preset, overrides=overrides))
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@dataclass
class Trainer:
    step: Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]  # one training step -> loss (device tensor)
    compile_seconds: list[float]  # the first step's wall time when compiled (compilation included)
    parameters: int


def build_trainer(preset: str, overrides: list[str], batch: int, device: torch.device, state: dict,
                  bf16: bool, channels_last: bool, compile: bool) -> Trainer:
    """The engine's step (StepRunner: forward with the momentum update and queue, backward, optimiser step) on a MoCo
    model loaded with `state`, with the preset's optimiser at its batch-scaled learning rate."""
    from mocokit import build_model, load_config

    step_runner = _first_import("StepRunner", "mocokit.engine.step", "mocokit.engine.loop")
    build_optimizer = _first_import("build_optimizer", "mocokit.training.optim", "mocokit.engine.optim")
    scaled_learning_rate = _first_import("scaled_learning_rate", "mocokit.training.optim", "mocokit.engine.optim")
    cfg = load_config(preset, overrides=overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.load_state_dict(state)
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = scaled_learning_rate(cfg.optim, batch)
    autocast = partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext
    compiled: list[float] = []
    runner = step_runner(model, build_optimizer(model, cfg.optim, lr), device, autocast,
                         channels_last=channels_last, compile=compile, on_compiled=compiled.append)
    momentum = cfg.model.momentum  # v3's schedule starts there; constant over a few steps

    def step(views: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        result = runner(views, lr, momentum)
        return result["loss"] if isinstance(result, dict) else result.loss

    return Trainer(step, compiled, sum(p.numel() for p in model.parameters()))


# ====================================================================================================================
# What is measured
# ====================================================================================================================


@dataclass
class ModelSpec:
    key: str
    label: str
    preset: str
    overrides: list[str]
    batch: int
    image_size: int
    convolutional: bool  # channels_last applies


FULL_MODELS = [
    ModelSpec("v2_resnet18", "MoCo v2, ResNet-18 CIFAR stem", "v2-cifar10", [], 256, 32, True),
    ModelSpec("v3_resnet18", "MoCo v3, ResNet-18 CIFAR stem", "v3-cifar10", [], 256, 32, True),
    ModelSpec("v3_vit_small", "MoCo v3, ViT-S patch 4", "v3-vit-cifar10", [], 256, 32, False),
]
TINY_MODELS = [
    ModelSpec("v2_resnet18", "MoCo v2, ResNet-18 x0.125", "v2-cifar10",
              ["model.width=0.125", "model.queue_size=256", "model.bn_splits=2"], 16, 16, True),
    ModelSpec("v3_resnet18", "MoCo v3, ResNet-18 x0.125", "v3-cifar10",
              ["model.width=0.125", "model.hidden_dim=64"], 16, 16, True),
    ModelSpec("v3_vit_small", "MoCo v3, ViT-tiny depth 2", "v3-vit-cifar10",
              ["model.backbone=vit_tiny", "model.image_size=16", "data.image_size=16", "model.patch_size=8",
               "model.backbone_args={depth: 2}", "model.hidden_dim=64"], 16, 16, False),
]


@dataclass
class Variant:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    timed: bool = True  # fp32_repeat only measures the noise floor of the losses
    fastest: bool = False

    @property
    def tolerance_kind(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def flags(self) -> dict:
        return {"bf16": self.bf16, "channels_last": self.channels_last, "compile": self.compile,
                "fastest_combination": self.fastest, "tolerance_kind": self.tolerance_kind,
                "tolerance_relative": TOLERANCES[self.tolerance_kind]["relative"]}


REFERENCE = "fp32"


def variants_for(spec: ModelSpec) -> list[Variant]:
    """Eager variants first (cheap), then the compiled ones (see `compile_order`)."""
    out = [Variant(REFERENCE), Variant("fp32_repeat", timed=False), Variant("bf16", bf16=True)]
    if spec.convolutional:
        out += [Variant("channels_last", channels_last=True),
                Variant("bf16_channels_last", bf16=True, channels_last=True)]
    out.append(Variant("compile", compile=True))
    if spec.convolutional:
        out.append(Variant("bf16_channels_last_compile", bf16=True, channels_last=True, compile=True, fastest=True))
    else:
        out.append(Variant("bf16_compile", bf16=True, compile=True, fastest=True))
    return out


def compile_order(jobs: list[tuple[ModelSpec, Variant]]) -> list[tuple[ModelSpec, Variant]]:
    """Most useful first: each model's fastest combination (v2 first), then the fp32 compiles (tight check)."""
    rank = {"v2_resnet18": 0, "v3_vit_small": 1, "v3_resnet18": 2}
    return sorted(jobs, key=lambda job: (not job[1].fastest, rank.get(job[0].key, 9)))


@dataclass
class Settings:
    device: torch.device
    tiny: bool
    check_steps: int
    warmup_steps: int
    timed_steps: int
    timing_reps: int
    compile: bool
    compile_skip_reason: str | None
    compile_seconds: float | None = None  # a compiled variant's own time limit (None: only the budget)


class Budget:
    def __init__(self, total: float) -> None:
        self.start = time.perf_counter()
        self.total = total

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_views(spec: ModelSpec, steps: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The views of each checked step, the same for every variant (a seeded generator)."""
    generator = torch.Generator(device="cpu").manual_seed(1234)
    shape = (spec.batch, 3, spec.image_size, spec.image_size)
    return [(torch.randn(shape, generator=generator).to(device), torch.randn(shape, generator=generator).to(device))
            for _ in range(steps)]


def dynamo_counts() -> tuple[int, int] | None:
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - counters are an internal of torch; absent: not recorded
        return None
    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def run_variant(spec: ModelSpec, variant: Variant, state: dict, views: list, settings: Settings,
                reference_losses: list[float] | None) -> dict:
    """Check steps (losses), then timing and peak memory. Raises on failure (the caller records it)."""
    device = settings.device
    record = variant.flags()
    started = time.perf_counter()
    if variant.compile:
        torch._dynamo.reset()  # a fresh compilation for this model (also keeps clear of the recompile limit)
    graphs_before = dynamo_counts()
    trainer = build_trainer(spec.preset, spec.overrides, spec.batch, device, state, variant.bf16,
                            variant.channels_last, variant.compile)
    record["parameters"] = trainer.parameters
    losses, step_seconds = [], []
    for i, step_views in enumerate(views):
        torch.manual_seed(1000 + i)  # the same shuffle-BN permutation at step i in every variant
        synchronize(device)
        t0 = time.perf_counter()
        losses.append(float(trainer.step(step_views)))  # float(): waits for the step
        step_seconds.append(time.perf_counter() - t0)
    record["losses"] = losses
    record["losses_finite"] = all(math.isfinite(x) for x in losses)
    record["first_step_seconds"] = step_seconds[0]
    if trainer.compile_seconds:
        later = statistics.median(step_seconds[1:]) if len(step_seconds) > 1 else 0.0
        record["compile_seconds"] = max(trainer.compile_seconds[0] - later, 0.0)
    if reference_losses is not None:
        record.update(compare_losses(losses, reference_losses, record["tolerance_relative"]))
    if variant.timed:
        record.update(measure_speed(trainer, views, spec.batch, settings))
    graphs_after = dynamo_counts()
    if variant.compile and graphs_before is not None and graphs_after is not None:
        record["dynamo_graphs"] = graphs_after[0] - graphs_before[0]
        record["graph_breaks"] = graphs_after[1] - graphs_before[1]
    del trainer
    record["seconds"] = time.perf_counter() - started
    return record


def compare_losses(losses: list[float], reference: list[float], tolerance: float) -> dict:
    relative = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, reference)]
    absolute = [abs(a - b) for a, b in zip(losses, reference)]
    finite = all(math.isfinite(x) for x in relative) and len(losses) == len(reference)
    worst = max(relative) if finite and relative else float("nan")
    return {"relative_loss_differences": relative, "max_relative_loss_difference": worst,
            "max_absolute_loss_difference": max(absolute) if finite and absolute else float("nan"),
            "within_tolerance": bool(finite and worst <= tolerance)}


def measure_speed(trainer: Trainer, views: list, batch: int, settings: Settings) -> dict:
    device = settings.device
    for i in range(settings.warmup_steps):
        trainer.step(views[i % len(views)])
    synchronize(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    samples = []
    for _ in range(settings.timing_reps):
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(settings.timed_steps):
            trainer.step(views[i % len(views)])
        synchronize(device)
        samples.append(batch * settings.timed_steps / (time.perf_counter() - t0))
    out = {"images_per_s": statistics.median(samples), "images_per_s_samples": samples,
           "step_ms": 1000 * batch / statistics.median(samples)}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(peak_memory_bytes=peak, peak_memory_mib=peak / 2**20,
                   allocated_before_timing_mib=allocated_before / 2**20)
    else:
        out.update(peak_memory_bytes=None, peak_memory_note="CUDA only (torch.cuda.max_memory_allocated)")
    return out


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_record(error: BaseException) -> dict:
    return {"status": "error", "error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": traceback.format_exc()[-4000:]}


class VariantTimeout(Exception):
    """A variant ran past its own time limit (--compile-seconds for compiled ones)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise VariantTimeout in the main thread after `seconds` (None: no limit). A SIGALRM handler, so it interrupts
    Python code (dynamo, inductor's code generation and its wait on compile workers), not a running CUDA kernel."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame) -> None:  # noqa: ARG001
        raise VariantTimeout(f"did not finish within its limit of {seconds:.0f} s (--compile-seconds)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_steps(models: list[ModelSpec], settings: Settings, budget: Budget, deadline: float, results: dict,
                save: Callable[[], None]) -> None:
    """Part 1: every model's variants; eager ones first, then compiled ones while they fit before `deadline`."""
    prepared: dict[str, tuple[dict, list]] = {}
    eager, compiled = [], []
    for spec in models:
        entry = results["models"][spec.key] = {
            "label": spec.label, "preset": spec.preset, "overrides": spec.overrides, "batch": spec.batch,
            "image_size": spec.image_size, "variants": {}}
        try:
            state = reference_state(spec.preset, spec.overrides)
            prepared[spec.key] = (state, make_views(spec, settings.check_steps, settings.device))
        except Exception as error:  # noqa: BLE001 - recorded, the other models go on
            entry["error"] = error_record(error)
            say(f"[{spec.key}] cannot build the model: {entry['error']['error']}")
            continue
        for variant in variants_for(spec):
            entry["variants"][variant.name] = {**variant.flags(), "status": "pending"}
            (compiled if variant.compile else eager).append((spec, variant))
    compile_seconds: list[float] = []  # wall time of each compiled variant so far: the estimate of the next
    for spec, variant in eager + compile_order(compiled):
        records = results["models"][spec.key]["variants"]

        def skip(reason: str) -> None:
            records[variant.name] = {**variant.flags(), "status": "skipped", "reason": reason}  # noqa: B023
            say(f"[{spec.key}] {variant.name}: skipped ({reason})")  # noqa: B023

        reference_losses = records.get(REFERENCE, {}).get("losses") if variant.name != REFERENCE else None
        needed = (1.2 * max(compile_seconds, default=FIRST_COMPILE_ESTIMATE / 1.2)) if variant.compile else 5.0
        if spec.key not in prepared:
            skip("the model could not be built")
        elif variant.compile and not settings.compile:
            skip(settings.compile_skip_reason)
        elif deadline - budget.elapsed() < needed:
            skip(f"time budget: {deadline - budget.elapsed():.0f} s left for the step checks, this variant needs "
                 f"about {needed:.0f} s")
        elif variant.name != REFERENCE and reference_losses is None:
            skip("fp32 eager (the reference) did not run")
        else:
            records[variant.name] = {**variant.flags(), "status": "running"}
            say(f"[{spec.key}] {variant.name} ...")
            state, views = prepared[spec.key]
            try:
                with time_limit(settings.compile_seconds if variant.compile else None):
                    record = run_variant(spec, variant, state, views, settings, reference_losses)
                record["status"] = "ok"
            except VariantTimeout as error:  # a compile that does not finish must not take the pretraining's time
                record = {**error_record(error), "status": "timed out"}
            except Exception as error:  # noqa: BLE001 - recorded (CUDA out of memory included), the others go on
                record = error_record(error)
            free_memory(settings.device)
            if variant.compile and "seconds" in record:
                compile_seconds.append(record["seconds"])
            records[variant.name] = {**variant.flags(), **record}
            say(f"[{spec.key}] {variant.name}: {describe(record)}")
        save()
    for spec in models:  # speed relative to fp32 eager
        variants = results["models"][spec.key]["variants"]
        base = variants.get(REFERENCE, {}).get("images_per_s")
        for record in variants.values():
            if base and record.get("images_per_s"):
                record["speedup_vs_fp32"] = record["images_per_s"] / base


def describe(record: dict) -> str:
    if record.get("status") != "ok":
        return f"{record.get('status')}: {record.get('error') or record.get('reason')}"
    parts = [f"losses {', '.join(f'{x:.4f}' for x in record['losses'])}"]
    if "max_relative_loss_difference" in record:
        parts.append(f"max rel diff {record['max_relative_loss_difference']:.2e} "
                     f"({'ok' if record['within_tolerance'] else 'FAIL'} <= {record['tolerance_relative']:g})")
    if "images_per_s" in record:
        parts.append(f"{record['images_per_s']:.0f} images/s")
    if record.get("peak_memory_mib") is not None:
        parts.append(f"peak {record['peak_memory_mib']:.0f} MiB")
    if "compile_seconds" in record:
        parts.append(f"compile {record['compile_seconds']:.1f} s")
    return ", ".join(parts)


# ====================================================================================================================
# Part 2: pretraining through the CLI
# ====================================================================================================================


def write_synthetic_imagefolder(root: Path, classes: int = 4, train_per_class: int = 16, test_per_class: int = 8,
                                side: int = 16) -> None:
    """root/{train,test}/class_k/*.png: noise around a class colour (so that kNN has something to find)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(40, 216, (classes, 3))
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for k in range(classes):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colours[k] + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def pretrain_overrides(args, settings: Settings, work: Path, data_path: Path) -> list[str]:
    tiny = settings.tiny
    overrides = [
        f"data.path={data_path}", f"data.root={work / 'cache'}", f"run.dir={work / 'run'}", "resume=none",
        f"train.epochs={args.pretrain_epochs}", f"train.batch_size={16 if tiny else 256}",
        f"data.max_images={args.pretrain_images}",
        "data.in_memory=true", "data.augment=batched", f"data.num_workers={0 if tiny else 8}",
        f"train.device={settings.device.type}",
        "train.precision=" + ("bf16" if settings.device.type == "cuda" else "fp32"),
        f"train.channels_last={str(settings.device.type == 'cuda').lower()}",
        f"train.compile={str(settings.compile).lower()}",
        f"monitor.knn_every_epochs={args.knn_every}", "run.tensorboard=false", "run.progress=false",
        "run.checkpoint_every_steps=0", f"run.log_every_steps={2 if tiny else 20}",
    ]
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if tiny:
        overrides += ["model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "data.image_size=16",
                      "monitor.knn_k=10", "monitor.knn_bank_size=512", "monitor.knn_query_size=256"]
    else:
        overrides += ["monitor.knn_bank_size=10000", "monitor.knn_query_size=2000"]
    return overrides


def run_pretraining(args, settings: Settings, budget: Budget, results: dict, children: list) -> dict:
    """Part 2 (see the module docstring), recorded in results["pretrain"]; raises when it produced no kNN."""
    record = results["pretrain"] = {"preset": "v2-cifar10"}  # filled in as it goes: kept when this raises
    use_archive = args.pretrain_data == "archive" or (args.pretrain_data == "auto" and not settings.tiny)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if use_archive:
            data_path = Path(args.data).resolve()
            record["data"] = str(args.data)
            if not data_path.is_file():
                raise FileNotFoundError(f"the CIFAR-10 archive {args.data} does not exist (give it with --data)")
        else:
            data_path = work / "images"
            write_synthetic_imagefolder(data_path)
            record["data"] = "synthetic ImageFolder, 4 classes, 64 train + 32 test images of 16 px"
        overrides = pretrain_overrides(args, settings, work, data_path)
        record["overrides"] = overrides
        cap = min(args.pretrain_seconds, budget.left() - STOP_GRACE_SECONDS - MARGIN_SECONDS)
        if cap < 20:
            raise TimeoutError(f"time budget: {budget.left():.0f} s left, too little to pretrain")
        record["time_cap_seconds"] = cap
        env = dict(os.environ)
        src = str(Path(mocokit.__file__).resolve().parents[1])  # the same mocokit in the child
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        command = [*PRETRAIN_COMMAND, "v2-cifar10", *overrides, "--json"]
        say("[pretrain] " + " ".join(command[1:]))
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 cwd=work, start_new_session=True)
        children.append(child)
        lines: list[str] = []
        reader = threading.Thread(target=_relay, args=(child, lines), daemon=True)
        reader.start()
        stopped = False
        try:
            child.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            stopped = True
            say(f"[pretrain] time cap of {cap:.0f} s reached: SIGTERM (the step finishes, a checkpoint is written)")
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        reader.join(timeout=10)
        children.remove(child)
        seconds = time.perf_counter() - started
        record.update(return_code=child.returncode, stopped_at_time_cap=stopped, seconds=seconds,
                      minutes=seconds / 60, log_tail=lines[-40:])
        summary = _last_json(lines)
        if summary is not None:
            record["cli_result"] = summary
        record.update(read_metrics(work / "run" / "metrics.jsonl", 16 if settings.tiny else 256))
        if summary is not None and summary.get("knn_top1") is not None:
            record["knn_top1"] = summary["knn_top1"]
            record["random_init_knn_top1"] = summary.get("random_init_knn_top1")
        if child.returncode not in (0, 130) and not stopped:  # 130: stopped gracefully by the signal
            raise RuntimeError(f"mocokit pretrain exited with status {child.returncode}: "
                               + " | ".join(lines[-5:]))
        if record.get("knn_top1") is None:
            raise RuntimeError("the pretraining produced no kNN accuracy (stopped before the first kNN evaluation?)")
    return record


def _relay(child: subprocess.Popen, lines: list[str]) -> None:
    for line in child.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        say(f"  | {line}")


def _last_json(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def read_metrics(path: Path, batch: int) -> dict:
    """kNN, throughput and compile time from the run's metrics.jsonl (also after a stop at the time cap)."""
    if not path.is_file():
        return {"metrics": "no metrics.jsonl written"}
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    epochs = [r for r in records if r.get("kind") == "epoch"]
    steps = [r for r in records if r.get("kind") == "step" and r.get("images_per_s")]
    out: dict = {"epochs_done": len(epochs),
                 "epochs": [{k: r.get(k) for k in ("epoch", "loss", "accuracy", "epoch_seconds", "knn_top1")}
                            for r in epochs]}
    knn = [r for r in epochs if r.get("knn_top1") is not None]
    if knn:
        out["knn_top1"], out["knn_top5"], out["knn_epoch"] = knn[-1]["knn_top1"], knn[-1].get("knn_top5"), \
            knn[-1]["epoch"]
    baseline = [r for r in records if r.get("kind") == "baseline"]
    if baseline:
        out["random_init_knn_top1"] = baseline[-1].get("knn_top1")
    compiled = [r for r in records if r.get("kind") == "compile"]
    if compiled:
        out["compile_first_step_seconds"] = compiled[-1].get("seconds")
    if len(steps) > 1:  # the first window includes the compilation
        out["step_window_images_per_s_median"] = statistics.median(r["images_per_s"] for r in steps[1:])
    if epochs:  # epoch_seconds: the training steps only (no kNN); the first epoch's includes the compilation
        seconds = [r.get("epoch_seconds") or 0.0 for r in epochs]
        ends = [r.get("step") or 0 for r in epochs]
        out["steps_done"], out["training_seconds"] = ends[-1], sum(seconds)
        out["images_per_s_all_epochs"] = ends[-1] * batch / sum(seconds) if sum(seconds) else None
        if len(epochs) > 1 and sum(seconds[1:]):
            out["images_per_s_after_first_epoch"] = (ends[-1] - ends[0]) * batch / sum(seconds[1:])
        out["images_per_s"] = out.get("images_per_s_after_first_epoch") or out["images_per_s_all_epochs"]
    return out


# ====================================================================================================================
# Machine, table, JSON, main
# ====================================================================================================================


def machine(device: torch.device) -> dict:
    info: dict = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                  "device": str(device), "cpu_cores": os.cpu_count(), "platform": platform.platform(),
                  "mocokit": str(Path(mocokit.__file__).resolve().parent)}
    for name in ("torchvision", "timm", "kornia"):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception as error:  # noqa: BLE001
            info[name] = f"unavailable ({type(error).__name__}: {error})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=15).stdout.strip()
        except Exception:  # noqa: BLE001
            info["driver"] = None
    return info


def configure_backends(device: torch.device) -> dict:
    """Explicit numerics for the comparison: true fp32 (no TF32) for the fp32 variants; recorded in the JSON."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # as the engine sets it for non-deterministic runs
    settings = {"matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    try:  # compiled random ops (shuffle BN's randperm) draw the same numbers as eager ones
        import torch._inductor.config as inductor_config

        inductor_config.fallback_random = True
        settings["inductor_fallback_random"] = True
    except Exception as error:  # noqa: BLE001
        settings["inductor_fallback_random"] = f"unset ({error})"
    return settings


def summarise(results: dict) -> dict:
    failed, errors, skipped = [], [], []
    for key, model in results.get("models", {}).items():
        if "error" in model:
            errors.append(f"{key}: {model['error']['error']}")
        for name, record in model.get("variants", {}).items():
            status = record.get("status")
            if status == "error":
                errors.append(f"{key}/{name}: {record['error']}")
            elif status == "skipped":
                skipped.append(f"{key}/{name}: {record.get('reason')}")
            elif status == "ok" and (not record.get("losses_finite", False)
                                     or record.get("within_tolerance") is False):
                failed.append(f"{key}/{name}: max relative loss difference "
                              f"{record.get('max_relative_loss_difference')} > {record.get('tolerance_relative')}"
                              if record.get("losses_finite") else f"{key}/{name}: non-finite loss")
            elif status == "pending":
                skipped.append(f"{key}/{name}: not reached")
            elif status == "running":
                errors.append(f"{key}/{name}: interrupted (time limit or signal)")
    for part, record in results.get("parts", {}).items():
        if record.get("status") == "error":
            errors.append(f"{part}: {record.get('error')}")
        elif record.get("status") == "skipped":
            skipped.append(f"{part}: {record.get('reason')}")
    checked = sum(record.get("status") == "ok" for model in results.get("models", {}).values()
                  for record in model.get("variants", {}).values())
    if not checked and results.get("models"):
        errors.append("no variant ran")
    return {"passed": not failed and not errors, "variants_checked": checked, "failed": failed, "errors": errors,
            "skipped": skipped}


def table(results: dict) -> str:
    lines = [f"{'model':<14} {'variant':<27} {'images/s':>9} {'x fp32':>7} {'peak MiB':>9} {'max rel dloss':>13} "
             f"{'tol':>6} {'check':>5} {'compile s':>9}"]
    for key, model in results.get("models", {}).items():
        for name, r in model.get("variants", {}).items():
            if r.get("status") != "ok":
                lines.append(f"{key:<14} {name:<27} {r.get('status', '?')}: "
                             f"{str(r.get('error') or r.get('reason'))[:80]}")
                continue
            diff = r.get("max_relative_loss_difference")
            check = "-" if diff is None else ("ok" if r.get("within_tolerance") else "FAIL")
            if not r.get("losses_finite", True):
                check = "NaN!"
            lines.append(
                f"{key:<14} {name:<27} {_fmt(r.get('images_per_s'), '.0f'):>9} "
                f"{_fmt(r.get('speedup_vs_fp32'), '.2f'):>7} {_fmt(r.get('peak_memory_mib'), '.0f'):>9} "
                f"{_fmt(diff, '.2e'):>13} {_fmt(r.get('tolerance_relative') if diff is not None else None, 'g'):>6} "
                f"{check:>5} {_fmt(r.get('compile_seconds'), '.1f'):>9}")
    pre = results.get("pretrain")
    if pre:
        lines.append("")
        lines.append(f"pretraining v2-cifar10: kNN top-1 {_fmt(pre.get('knn_top1'), '.4f')} (random init "
                     f"{_fmt(pre.get('random_init_knn_top1'), '.4f')}), {pre.get('epochs_done', '?')} epochs, "
                     f"{_fmt(pre.get('images_per_s'), '.0f')} images/s, {_fmt(pre.get('minutes'), '.2f')} min"
                     + (", stopped at the time cap" if pre.get("stopped_at_time_cap") else ""))
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _jsonable(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


class Output:
    """Writes the results JSON atomically; safe to call from the watchdog thread."""

    def __init__(self, path: Path, results: dict) -> None:
        self.path, self.results = path, results
        self.lock = threading.RLock()

    def save(self) -> None:
        with self.lock:
            for _ in range(3):  # the main thread may be changing the dict (watchdog)
                try:
                    text = json.dumps(_jsonable(copy.deepcopy(self.results)), indent=2)
                    break
                except RuntimeError:
                    time.sleep(0.05)
            else:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, self.path)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and data (the default without CUDA)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 JPEG archive for the pretraining")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/gpu_check.json; tiny: "
                             "benchmarks/out/gpu_check-tiny.json)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds for everything (watchdog)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="compiled variants: auto = on CUDA only (a CPU takes minutes per compilation)")
    parser.add_argument("--compile-seconds", type=float, default=150.0,
                        help="a compiled variant's own time limit; past it the variant is recorded as timed out and "
                             "the check goes on (default %(default)s; 0: none)")
    parser.add_argument("--models", default=None, help="comma-separated subset of: v2_resnet18,v3_resnet18,"
                                                       "v3_vit_small (default: all; empty: none)")
    parser.add_argument("--no-pretrain", dest="pretrain", action="store_false", help="skip the pretraining")
    parser.add_argument("--pretrain-data", choices=["auto", "archive", "synthetic"], default="auto",
                        help="auto: the archive (--data), synthetic images with --tiny")
    parser.add_argument("--pretrain-seconds", type=float, default=None,
                        help=f"cap of the pretraining (default {PRETRAIN_SECONDS}; tiny: 120)")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default 10 (tiny: 2)")
    parser.add_argument("--pretrain-images", type=int, default=None, help="data.max_images (default 50000; tiny 64)")
    parser.add_argument("--knn-every", type=int, default=None, help="kNN every N epochs (default 2; tiny: 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's own on CUDA; 1 on a CPU, which a busy "
                             "shared machine slows tenfold with more)")
    parser.add_argument("--check-steps", type=int, default=None, help="steps compared with fp32 (default 5; tiny 2)")
    parser.add_argument("--timed-steps", type=int, default=None, help="steps per timing sample (default 10; tiny 2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(args.budget)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    tiny = args.tiny or not cuda
    compile_on = {"auto": device.type == "cuda", "on": True, "off": False}[args.compile]
    skip_reason = None if compile_on else (
        "--compile off" if args.compile == "off" else
        "no CUDA: compiling a MoCo step takes minutes on a CPU (--compile on forces it)")
    settings = Settings(device, tiny, check_steps=args.check_steps or (2 if tiny else 5),
                        warmup_steps=1 if tiny else 3, timed_steps=args.timed_steps or (2 if tiny else 10),
                        timing_reps=2 if tiny else 3, compile=compile_on, compile_skip_reason=skip_reason,
                        compile_seconds=args.compile_seconds or None)
    if args.threads is None and device.type == "cpu":
        args.threads = 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.out = args.out or (DEFAULT_TINY_OUT if tiny else DEFAULT_OUT)
    args.pretrain_seconds = args.pretrain_seconds or (120.0 if tiny else PRETRAIN_SECONDS)
    args.pretrain_epochs = args.pretrain_epochs or (2 if tiny else 10)
    args.pretrain_images = args.pretrain_images or (64 if tiny else 50000)
    args.knn_every = args.knn_every or (1 if tiny else 2)
    if tiny and args.pretrain_data == "archive" and args.pretrain_images == 64:
        args.pretrain_images = 256

    results: dict = {
        "script": "benchmarks/gpu_check.py", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
        "tiny": tiny, "status": "running", "budget_seconds": args.budget,
        "tolerances": TOLERANCES,
        "tolerance_rule": "max over the checked steps of |loss - loss_fp32| / |loss_fp32|, fp32 eager at the same "
                          "step, same initial weights, views and shuffle-BN permutations",
        "settings": {**{k: v for k, v in asdict(settings).items() if k != "device"},
                     "torch_threads": torch.get_num_threads()},
        "parts": {}, "models": {},
    }
    output = Output(args.out, results)
    children: list[subprocess.Popen] = []

    def watchdog() -> None:
        results["status"] = "stopped by the watchdog"
        results["error"] = f"the time budget of {args.budget:.0f} s ran out; the JSON holds what had finished"
        for child in list(children):
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
        results["total_seconds"] = budget.elapsed()
        results["summary"] = summarise(results)
        output.save()
        say(f"gpu_check: time budget of {args.budget:.0f} s ran out; wrote {args.out}")
        os._exit(3)

    timer = threading.Timer(max(args.budget - 3, 1), watchdog)
    timer.daemon = True
    timer.start()

    def sigterm(signum, frame) -> None:  # noqa: ARG001 - e.g. the machine's own time limit
        results["status"] = f"stopped by {signal.Signals(signum).name}"
        results["total_seconds"] = budget.elapsed()
        output.save()
        os._exit(3)

    signal.signal(signal.SIGTERM, sigterm)

    try:
        results["machine"] = machine(device)
        results["numerics"] = configure_backends(device)
    except Exception as error:  # noqa: BLE001
        results["parts"]["setup"] = error_record(error)
    say(f"gpu_check: {results.get('machine', {}).get('gpu', 'no GPU, CPU')}, torch {torch.__version__}, "
        f"{'tiny' if tiny else 'full'} sizes, compile {'on' if compile_on else 'off'}, budget {args.budget:.0f} s")
    output.save()

    models = TINY_MODELS if tiny else FULL_MODELS
    if args.models is not None:
        wanted = {k for k in args.models.split(",") if k}
        unknown = wanted - {m.key for m in models}
        if unknown:
            raise SystemExit(f"gpu_check: unknown model(s) {sorted(unknown)}; choose from {[m.key for m in models]}")
        models = [m for m in models if m.key in wanted]

    # Part 1, up to the time kept for part 2.
    reserve = (args.pretrain_seconds + STOP_GRACE_SECONDS) if args.pretrain else 0.0
    deadline = args.budget - MARGIN_SECONDS - reserve
    started = time.perf_counter()
    part = results["parts"]["steps"] = {"status": "running", "deadline_seconds": deadline}
    try:
        check_steps(models, settings, budget, deadline, results, output.save)
        part["status"] = "ok"
    except Exception as error:  # noqa: BLE001
        part.update(error_record(error))
    part["seconds"] = time.perf_counter() - started
    say(f"gpu_check: step checks took {part['seconds']:.0f} s ({budget.elapsed():.0f} s so far)")
    free_memory(device)
    output.save()

    # Part 2.
    if args.pretrain:
        started = time.perf_counter()
        part = results["parts"]["pretrain"] = {"status": "running"}
        try:
            run_pretraining(args, settings, budget, results, children)
            part["status"] = "ok"
        except Exception as error:  # noqa: BLE001
            part.update(error_record(error))
            results.setdefault("pretrain", {})["error"] = part["error"]
        part["seconds"] = time.perf_counter() - started
        say(f"gpu_check: pretraining took {part['seconds']:.0f} s ({budget.elapsed():.0f} s so far)")
    else:
        results["parts"]["pretrain"] = {"status": "skipped", "reason": "--no-pretrain"}

    timer.cancel()
    results["total_seconds"] = budget.elapsed()
    results["summary"] = summarise(results)
    results["status"] = "passed" if results["summary"]["passed"] else "failed"
    output.save()
    print(table(results))
    print(f"\n{results.get('machine', {}).get('gpu', 'CPU')}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"total {results['total_seconds']:.0f} s; {results['status'].upper()}"
          + "".join(f"\n  failed: {x}" for x in results["summary"]["failed"])
          + "".join(f"\n  error: {x}" for x in results["summary"]["errors"]))
    say(f"wrote {args.out}")
    return 0 if results["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
