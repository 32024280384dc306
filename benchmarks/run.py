"""`make bench`: mocokit's training step against a plain eager MoCo, and what limits it.

    python benchmarks/run.py                    # the full benchmark (about 6 minutes on 2 quiet CPU cores)
    python benchmarks/run.py --compile on       # mocokit compiled even on a CPU (adds ~9 minutes of compilation)
    python benchmarks/run.py --tiny --out x.json   # tiny models and data: checks that everything runs (seconds)
    python benchmarks/run.py --device cuda --precision bf16

1. Step throughput (images/s): mocokit's step (the engine's StepRunner; torch.compile as train.compile=auto
   decides, i.e. on CUDA only, unless --compile says otherwise) against PlainMoCo (benchmarks/plain_moco.py: the
   papers' pseudocode, eager) on the same model, initial weights, batch and threads, the two alternated in one
   process; median and spread of --reps samples. v2: the v2-cifar10 preset (ResNet-18 CIFAR stem, symmetric loss,
   K=4096, 8 BN groups) at batch 128; v3: v3-vit-cifar10 with ViT-tiny (patch 4 at 32 px) at batch 128. Views are
   random tensors already on the device: this is the step alone. Both first steps start from the same RNG state
   and must give the same loss (same algorithm), which is recorded.
2. Achieved FLOP/s: FLOPs of one step (torch.utils.flop_counter: forward and backward of the query side plus the
   key forwards, counted on meta tensors) / mocokit's median step time, against a 4096² matrix product timed in the
   same run, at the start and at the end (the practical limit of the device for dense work).
3. Peak memory of a step (the larger of two) above what is in use just before it, mocokit / baseline (CPU: the
   resident-set high-water mark after returning free heap pages; CUDA: the allocator's statistics).
4. End-to-end epoch of `mocokit pretrain` (demo preset) on a CIFAR-10 subset, data loading included, with the
   batched augmentation on in-memory uint8 images and with per-image augmentation in DataLoader workers, against
   the step-only rate of the same model: how well the data side keeps the model fed.

Prints a Markdown table; writes benchmarks/results.json (the headline ratios, to track over time; --out changes
it) and everything measured to benchmarks/out/bench_step.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from mocokit import load_config
from mocokit.config import Config
from mocokit.engine.loop import StepRunner, compile_enabled
from mocokit.engine.optim import build_optimizer, scaled_learning_rate
from mocokit.models import build_model
from mocokit.models.momentum import cosine_momentum

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, when run as a script
from measure import alternate, count_flops, matmul_flops_per_s, step_peak_bytes, summary, timed  # noqa: E402
from plain_moco import PlainMoCo, plain_step  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


@dataclass
class Workload:
    label: str
    preset: str
    overrides: list[str]
    batch: int
    image_size: int

    def config(self) -> Config:
        return load_config(self.preset, overrides=self.overrides)


FULL = {
    "v2": Workload("v2, ResNet-18 CIFAR stem", "v2-cifar10", [], 128, 32),
    "v3": Workload("v3, ViT-tiny patch 4", "v3-vit-cifar10", ["model.backbone=vit_tiny"], 128, 32),
}
TINY = {
    "v2": Workload("v2, ResNet-18 ×0.125", "v2-cifar10",
                   ["model.width=0.125", "model.queue_size=256", "model.bn_splits=2"], 16, 16),
    "v3": Workload("v3, ViT-tiny depth 2", "v3-vit-cifar10",
                   ["model.backbone=vit_tiny", "model.image_size=16", "model.patch_size=8",
                    "model.backbone_args={depth: 2}", "model.hidden_dim=64"], 16, 16),
}


@dataclass
class Variant:
    """One side of the comparison, ready to step: `step()` runs one training step on fixed views."""

    step: object
    compile_seconds: list[float] = field(default_factory=list)  # first step's wall time, when compiled


def momentum_schedule(cfg: Config):
    """m for successive calls: v3's rising schedule (each call a new value, as in training), else constant."""
    counter = iter(range(10**9))
    if cfg.model.momentum_schedule == "cosine":
        return lambda: cosine_momentum(next(counter) / 1000, cfg.model.momentum)
    return lambda: cfg.model.momentum


def build_variant(name: str, workload: Workload, device: torch.device, dtype: torch.dtype | None,
                  compile: bool) -> Variant:
    """`baseline`: PlainMoCo, eager. `mocokit`: the engine's StepRunner on the MoCo model, as configured by the
    preset (memory format), compiled when `compile`. Same initial weights, views and optimiser for both."""
    cfg = workload.config()
    torch.manual_seed(0)
    moco = build_model(cfg).to(device).train()
    generator = torch.Generator(device=device).manual_seed(1)
    shape = (workload.batch, 3, workload.image_size, workload.image_size)
    x1 = torch.randn(shape, device=device, generator=generator)
    x2 = torch.randn(shape, device=device, generator=generator)
    lr = scaled_learning_rate(cfg.optim, workload.batch)
    momentum = momentum_schedule(cfg)
    autocast = partial(torch.autocast, device_type=device.type, dtype=dtype) if dtype else nullcontext
    if name == "baseline":
        plain = PlainMoCo(moco).to(device)
        optimizer = build_optimizer(plain, cfg.optim, lr)

        def step() -> torch.Tensor:
            with autocast():
                return plain_step(plain, optimizer, x1, x2, momentum())

        return Variant(step)
    if cfg.train.channels_last:
        moco = moco.to(memory_format=torch.channels_last)
    variant = Variant(None)
    runner = StepRunner(moco, build_optimizer(moco, cfg.optim, lr), device, autocast,
                        channels_last=cfg.train.channels_last, compile=compile,
                        on_compiled=variant.compile_seconds.append)
    variant.step = lambda: runner((x1, x2), lr, momentum())["loss"]
    return variant


def step_flops(workload: Workload) -> int:
    """FLOPs of one mocokit step of `workload`, counted on meta tensors (no computation)."""
    cfg = workload.config()
    with torch.device("meta"):
        model = build_model(cfg).train()
        x = torch.empty(workload.batch, 3, workload.image_size, workload.image_size)

    def step() -> None:
        model(x, x.clone(), momentum=cfg.model.momentum)["loss"].backward()

    return count_flops(step)


def dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def bench_step(key: str, workload: Workload, args, device: torch.device, dtype) -> dict:
    """Section 1 and 3 for one workload: warm-up (the compile), one step each for memory, then alternated timing."""
    say(f"[{key}] {workload.label}, batch {workload.batch}: building both variants")
    graphs0, breaks0 = dynamo_counts()
    variants = {"baseline": build_variant("baseline", workload, device, dtype, compile=False),
                "mocokit": build_variant("mocokit", workload, device, dtype, compile=args.compile)}
    first, first_loss = {}, {}
    for name, variant in variants.items():
        torch.manual_seed(0)  # the same shuffle-BN permutations: both must compute the same first loss
        first[name] = timed(lambda v=variant, n=name: first_loss.__setitem__(n, float(v.step())), 1, device)
        say(f"[{key}] {name}: first step {first[name]:.1f} s (the compilation, when compiled), "
            f"loss {first_loss[name]:.6f}")
    peak = {name: _max_or_none(step_peak_bytes(variant.step, device) for _ in range(2))
            for name, variant in variants.items()}
    samples = alternate({name: v.step for name, v in variants.items()}, args.reps, args.steps, device)
    graphs1, breaks1 = dynamo_counts()
    rates = {name: summary([workload.batch / s for s in seconds]) for name, seconds in samples.items()}
    for name in variants:
        say(f"[{key}] {name}: {rates[name]['median']:.2f} images/s (spread {rates[name]['spread']:.0%})")
    flops = step_flops(workload)
    step_seconds = {name: summary(seconds)["median"] for name, seconds in samples.items()}
    compile_s = variants["mocokit"].compile_seconds
    return {
        "label": workload.label, "preset": workload.preset, "overrides": workload.overrides,
        "batch": workload.batch, "image_size": workload.image_size,
        "images_per_s": rates, "step_seconds": step_seconds,
        "speedup": rates["mocokit"]["median"] / rates["baseline"]["median"],
        "compile_seconds": (compile_s[0] - step_seconds["mocokit"]) if compile_s else None,
        "first_step_seconds": first,
        # Same model, views and algorithm: the first losses agree up to rounding (compiled code reorders sums).
        "first_loss": first_loss,
        "first_loss_relative_difference": abs(first_loss["mocokit"] / first_loss["baseline"] - 1),
        "dynamo_graphs": graphs1 - graphs0, "graph_breaks": breaks1 - breaks0,
        "step_flops": flops,
        "flops_per_s": {name: flops / s for name, s in step_seconds.items()},
        "peak_step_bytes": peak,
        "peak_memory_ratio": (peak["mocokit"] / peak["baseline"]) if peak["baseline"] and peak["mocokit"] else None,
    }


def bench_epoch(args, device: torch.device) -> dict:
    """Section 4: one epoch of `mocokit pretrain` (demo preset) on a CIFAR-10 subset, per augmentation backend."""
    from bench_data import write_images

    from mocokit.engine.pretrain import pretrain

    n, batch = (64, 16) if args.tiny else (args.epoch_images, 128)
    base = ["train.epochs=1", f"train.batch_size={batch}", "monitor.knn_every_epochs=0", "run.tensorboard=false",
            "run.progress=false", "run.checkpoint_every_steps=0", f"train.device={device}", "resume=none"]
    if args.tiny:
        base += ["model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "data.image_size=16",
                 "train.channels_last=false"]
    backends = {
        "batched_in_memory": ["data.augment=batched", "data.in_memory=true", "data.num_workers=0"],
        "per_image_workers": ["data.augment=per_image", "data.in_memory=true",
                              f"data.num_workers={os.cpu_count() or 1}"],
    }
    result: dict = {"preset": "demo", "images": n, "batch": batch, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, n, args.archive if not args.tiny else Path("/nonexistent"), None)
        for name, overrides in backends.items():
            say(f"[epoch] {name}: {n} images, batch {batch}")
            run_dir = Path(tmp) / name
            cfg = load_config("demo", overrides=base + overrides + [f"data.path={folder}", f"run.dir={run_dir}",
                                                                    f"data.root={Path(tmp) / 'cache'}"])
            pretrain(cfg, echo=lambda _message: None)
            epoch = next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                         if r.get("kind") == "epoch")
            steps = n // batch
            result["backends"][name] = {"epoch_seconds": epoch["epoch_seconds"],
                                        "images_per_s": steps * batch / epoch["epoch_seconds"]}
        # The same model's step alone, on views already in memory: the rate a perfectly fed model would reach.
        workload = Workload("demo", "demo", [o for o in base if o.startswith(("model.", "train.channels"))], batch,
                            16 if args.tiny else 32)
        variant = build_variant("mocokit", workload, device, None, compile=False)
        variant.step()
        seconds = summary([timed(variant.step, 1, device) for _ in range(args.epoch_step_reps)])["median"]
        result["step_only_images_per_s"] = batch / seconds
        for row in result["backends"].values():
            row["fed_fraction"] = row["images_per_s"] / result["step_only_images_per_s"]
    return result


def machine(device: torch.device) -> dict:
    info = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    info["cpu"] = model
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def table(results: dict) -> str:
    """The Markdown table the README shows."""
    lines = ["| workload | baseline images/s | mocokit images/s | speedup | compile | mocokit GFLOP/s "
             "(of matmul) | peak step memory, mocokit / baseline |",
             "|---|---|---|---|---|---|---|"]
    matmul = results["matmul_flops_per_s"]["median"]
    for row in results["steps"].values():
        rate = row["images_per_s"]
        peak = row["peak_step_bytes"]
        memory = (f"{peak['mocokit'] / 2**20:.0f} / {peak['baseline'] / 2**20:.0f} MiB = "
                  f"{row['peak_memory_ratio']:.2f}") if row["peak_memory_ratio"] else "n/a"
        compile_s = f"{row['compile_seconds']:.0f} s" if row["compile_seconds"] is not None else "off"
        lines.append(
            f"| {row['label']}, batch {row['batch']} | {rate['baseline']['median']:.1f} "
            f"(±{rate['baseline']['spread'] / 2:.0%}) | {rate['mocokit']['median']:.1f} "
            f"(±{rate['mocokit']['spread'] / 2:.0%}) | **{row['speedup']:.2f}×** | {compile_s} | "
            f"{row['flops_per_s']['mocokit'] / 1e9:.1f} ({row['flops_per_s']['mocokit'] / matmul:.0%}) | {memory} |")
    lines.append("")
    lines.append(f"Matrix product {results['matmul_side']}² ({results['precision']}): {matmul / 1e9:.1f} GFLOP/s "
                 f"(median of {results['matmul_flops_per_s']['n']}). Step FLOPs: "
                 + ", ".join(f"{k} {row['step_flops'] / 1e9:.0f} GFLOP" for k, row in results["steps"].items())
                 + ". torch.compile: "
                 + ", ".join(f"{k} {row['dynamo_graphs']} graph(s), {row['graph_breaks']} graph breaks"
                             for k, row in results["steps"].items()) + ".")
    if "epoch" in results:
        epoch = results["epoch"]
        lines.append("")
        lines.append(f"End-to-end epoch, `demo` preset, {epoch['images']} CIFAR-10 images, batch {epoch['batch']} "
                     f"(step alone: {epoch['step_only_images_per_s']:.0f} images/s):")
        lines.append("")
        lines.append("| data | epoch | images/s | of the step-only rate |")
        lines.append("|---|---|---|---|")
        for name, row in epoch["backends"].items():
            lines.append(f"| {name.replace('_', ' ')} | {row['epoch_seconds']:.1f} s | {row['images_per_s']:.0f} | "
                         f"{row['fed_fraction']:.0%} |")
    return "\n".join(lines)


def headline(results: dict) -> dict:
    """benchmarks/results.json: the ratios to track over time (see the module docstring)."""
    steps = results["steps"]
    matmul = results["matmul_flops_per_s"]["median"]
    out = {f"step_speedup_{k}": round(row["speedup"], 3) for k, row in steps.items()}
    if "v2" in steps:
        out["flops_fraction"] = round(steps["v2"]["flops_per_s"]["mocokit"] / matmul, 3)
        out["peak_memory_ratio"] = steps["v2"]["peak_memory_ratio"] and round(steps["v2"]["peak_memory_ratio"], 3)
    for k, row in steps.items():
        out[f"flops_fraction_{k}"] = round(row["flops_per_s"]["mocokit"] / matmul, 3)
        out[f"peak_memory_ratio_{k}"] = row["peak_memory_ratio"] and round(row["peak_memory_ratio"], 3)
        out[f"compile_seconds_{k}"] = row["compile_seconds"] and round(row["compile_seconds"], 1)
    if "epoch" in results:
        for name, row in results["epoch"]["backends"].items():
            out[f"epoch_seconds_{name}"] = round(row["epoch_seconds"], 2)
    out.update(machine=results["machine"], tiny=results["tiny"], date=results["date"])
    return out


def _max_or_none(values) -> int | None:
    values = list(values)
    return None if None in values else max(values)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and data, to check that everything runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="autocast dtype of both variants (the matrix product uses the same)")
    parser.add_argument("--workloads", default="v2,v3", help="comma-separated: v2, v3 (empty: none)")
    parser.add_argument("--reps", type=int, default=None, help="timing samples per variant (default 5; tiny: 2)")
    parser.add_argument("--steps", type=int, default=None, help="steps per sample (default 1 on CPU, 10 on CUDA)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default=None,
                        help="torch.compile mocokit's step; auto (default) as train.compile=auto: on CUDA only, since "
                             "on a CPU compiling takes many minutes (tiny: off)")
    parser.add_argument("--no-epoch", dest="epoch", action="store_false", help="skip the end-to-end epoch")
    parser.add_argument("--epoch-images", type=int, default=5120, help="more than the demo's queue of 4096")
    parser.add_argument("--epoch-step-reps", type=int, default=3)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="CIFAR-10 JPEG archive")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None,
                        help="headline JSON (default benchmarks/results.json; tiny: benchmarks/out/results-tiny.json)")
    parser.add_argument("--full-out", type=Path, default=None,
                        help="everything measured (default: benchmarks/out/bench_step[-tiny].json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    suffix = "-tiny" if args.tiny else ""
    args.out = args.out or (REPO / "benchmarks" / ("out/results-tiny.json" if args.tiny else "results.json"))
    args.full_out = args.full_out or REPO / "benchmarks" / "out" / f"bench_step{suffix}.json"
    setting = args.compile or ("off" if args.tiny else "auto")
    args.compile = compile_enabled({"on": True, "off": False, "auto": "auto"}[setting], device)
    args.reps = args.reps or (2 if args.tiny else 5)
    args.steps = args.steps or (10 if device.type == "cuda" else 1)
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    started = time.perf_counter()

    results: dict = {"machine": machine(device), "tiny": args.tiny, "precision": args.precision,
                     "date": time.strftime("%Y-%m-%d %H:%M"), "reps": args.reps, "steps_per_rep": args.steps,
                     "compile": args.compile, "steps": {}}
    results["matmul_side"] = 1024 if args.tiny else 4096
    results["matmul_flops_per_s"] = summary(matmul_flops_per_s(device, dtype or torch.float32, results["matmul_side"]))
    for key in filter(None, args.workloads.split(",")):
        workloads = TINY if args.tiny else FULL
        results["steps"][key] = bench_step(key, workloads[key], args, device, dtype)
    # The matrix product again at the end: a shared machine's drift shows as a difference between the two.
    results["matmul_flops_per_s_end"] = summary(
        matmul_flops_per_s(device, dtype or torch.float32, results["matmul_side"]))
    if args.epoch:
        results["epoch"] = bench_epoch(args, device)
    results["seconds"] = time.perf_counter() - started
    print(table(results))
    print(f"\n{results['machine']['cpu']}, {results['machine']['cores']} cores, {results['machine']['torch_threads']} "
          f"threads, {results['machine'].get('gpu', 'no GPU')}, torch {torch.__version__}; "
          f"benchmark took {results['seconds'] / 60:.1f} min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(headline(results), indent=2) + "\n")
    args.full_out.parent.mkdir(parents=True, exist_ok=True)
    args.full_out.write_text(json.dumps(results, indent=2, default=_jsonable) + "\n")
    say(f"wrote {args.out} and {args.full_out}")
    return results


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
