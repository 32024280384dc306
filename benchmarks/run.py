"""`make bench`: mocokit's training step against a plain eager MoCo, eager and compiled, and what limits it.

    python benchmarks/run.py                    # the full benchmark (about 20 minutes on 2 quiet CPU cores)
    python benchmarks/run.py --compiled ""      # without the compiled variants
    python benchmarks/run.py --tiny --out x.json   # tiny models and data: checks that everything runs (~7 minutes)
    python benchmarks/run.py --tiny --compile-backend aot_eager   # the same, no Inductor codegen (~3 minutes)
    python benchmarks/run.py --device cuda --precision bf16

1. Step throughput (images/s): mocokit's eager step (the engine's StepRunner) and, for the --compiled workloads,
   its compiled step (train.compile=true, compile_scope=networks) against PlainMoCo (benchmarks/plain_moco.py: the
   papers' pseudocode, eager) on the same model, initial weights, batch and threads, each in its own process,
   alternated; median and spread of --reps samples. v2: the v2-cifar10 preset (ResNet-18 CIFAR stem, symmetric
   loss, K=4096, 8 BN groups) at batch 128; v3: v3-vit-cifar10 with ViT-tiny (patch 4 at 32 px) at batch 128; demo:
   the demo preset (quarter-width ResNet-18, channels_last). Views are random tensors already on the device: this
   is the step alone. All first steps start from the same RNG state and must give the same loss (same algorithm),
   which is recorded. Compile times are reported apart: the compiling step less a compiled step, with an empty
   kernel cache (first), then in --warm-runs new processes that find the cache filled (warm: a second run).
2. Achieved FLOP/s: FLOPs of one step (torch.utils.flop_counter: forward and backward of the query side plus the
   key forwards, counted on meta tensors) / mocokit's median step time, against a 4096² matrix product timed in the
   same run, at the start and at the end (the practical limit of the device for dense work).
3. Peak tensor memory of a step (the larger of two) above what is allocated just before it, mocokit / baseline
   (CUDA: the allocator's statistics; CPU: the CPU allocator's events, through the profiler). On a CPU the peak of
   the resident set is recorded too; it also counts the freed blocks glibc keeps (mocokit keeps them on purpose).
   Each variant runs in its own process (see Worker), so nothing process-wide is shared.
4. End-to-end epoch of `mocokit pretrain` (demo preset, eager) on a CIFAR-10 subset, data loading included, with
   the batched augmentation on in-memory uint8 images and with per-image augmentation in DataLoader workers,
   against the step-only rate of the same model: how well the data side keeps the model fed.

Prints a Markdown table; writes benchmarks/results.json (the headline ratios, to track over time; --out changes
it) and everything measured to benchmarks/out/bench_step.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from mocokit import load_config
from mocokit.engine.step import StepRunner
from mocokit.models import build_model
from mocokit.models.momentum import cosine_momentum
from mocokit.training.cpu_memory import reuse_freed_memory
from mocokit.training.optim import build_optimizer, scaled_learning_rate
from mocokit.training.run_config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, when run as a script
from measure import (  # noqa: E402
    alternate,
    count_flops,
    matmul_flops_per_s,
    step_peak_bytes,
    step_peak_resident_bytes,
    summary,
    timed,
)
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
    "demo": Workload("demo: v2, ResNet-18 ×0.25, symmetric, 8 BN groups, channels_last", "demo", [], 128, 32),
}
TINY = {
    "v2": Workload("v2, ResNet-18 ×0.125", "v2-cifar10",
                   ["model.width=0.125", "model.queue_size=256", "model.bn_splits=2"], 16, 16),
    "demo": Workload("demo, ResNet-18 ×0.125", "demo",
                     ["model.width=0.125", "model.queue_size=256", "model.bn_splits=2", "data.image_size=16"], 16, 16),
    "v3": Workload("v3, ViT-tiny depth 2", "v3-vit-cifar10",
                   ["model.backbone=vit_tiny", "model.image_size=16", "data.image_size=16", "model.patch_size=8",
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
                  compile: bool, compile_backend: str = "inductor") -> Variant:
    """`baseline`: PlainMoCo, eager. `mocokit` / `compiled`: the engine's StepRunner on the MoCo model, as configured
    by the preset (memory format), compiled when `compile` (train.compile_scope's default: each network on its own).
    Same initial weights, views and optimiser for all."""
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
                        channels_last=cfg.train.channels_last, compile=compile, compile_backend=compile_backend,
                        on_compiled=variant.compile_seconds.append)
    variant.step = lambda: runner((x1, x2), lr, momentum()).loss
    return variant


def step_flops(workload: Workload) -> int:
    """FLOPs of one mocokit step of `workload`, counted on meta tensors (no computation)."""
    cfg = workload.config()
    with torch.device("meta"):
        model = build_model(cfg).train()
        x = torch.empty(workload.batch, 3, workload.image_size, workload.image_size)

    def step() -> None:
        model(x, x.clone(), momentum=cfg.model.momentum)["loss"].backward()
        model.end_step()

    return count_flops(step)


def dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


REPLY = "@@bench "  # prefix of a worker's answers on its stdout (anything else there is passed on to stderr)


class Worker:
    """One variant in its own Python process, so that nothing process-wide is shared: allocator settings (mocokit's
    engine tunes glibc's on a CPU), compiled code and caches, the memory high-water mark. Driven by one JSON command
    per line; the parent alternates the workers, so only one computes at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        while line := self.process.stdout.readline():
            if not line.startswith(REPLY):
                sys.stderr.write(line)
                continue
            reply = json.loads(line[len(REPLY):])
            if "error" in reply:
                raise RuntimeError(f"benchmark worker, {command['op']}: {reply['error']}")
            return reply
        raise RuntimeError(f"the benchmark worker exited with status {self.process.wait()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=120)


def serve() -> None:
    """The worker side of `Worker`: build one variant, then measure what the parent asks."""
    state: dict = {}
    while line := sys.stdin.readline():
        try:
            reply = _answer(json.loads(line), state)
        except Exception as error:  # reported to the parent, which raises it
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(REPLY + json.dumps(reply), flush=True)


def _answer(command: dict, state: dict) -> dict:
    op = command["op"]
    if op == "build":
        torch.set_num_threads(command["threads"])
        device = torch.device(command["device"])
        if command["variant"] == "mocokit" and device.type == "cpu":
            reuse_freed_memory()  # what mocokit's engine does on a CPU (mocokit/training/cpu_memory.py)
        dtype = torch.bfloat16 if command["precision"] == "bf16" else None
        state["device"] = device
        state["variant"] = build_variant(command["variant"], Workload(**command["workload"]), device, dtype,
                                         command["compile"], command["compile_backend"])
        return {}
    if op == "dynamo":
        return dict(zip(("graphs", "breaks"), dynamo_counts()))
    variant, device = state["variant"], state["device"]
    if op == "first":
        torch.manual_seed(0)  # the same shuffle-BN permutations: both variants must compute the same loss
        losses: list[float] = []
        seconds = timed(lambda: losses.append(float(variant.step())), 1, device)
        return {"seconds": seconds, "loss": losses[0],
                "compiled_seconds": variant.compile_seconds[0] if variant.compile_seconds else None}
    if op == "peak":
        return {"bytes": step_peak_bytes(variant.step, device)}
    if op == "peak_resident":
        return {"bytes": step_peak_resident_bytes(variant.step) if device.type == "cpu" else None}
    if op == "time":
        return {"seconds": timed(variant.step, command["steps"], device)}
    return {"error": f"unknown command {op!r}"}


def bench_step(key: str, workload: Workload, workers: dict[str, Worker], args, device: torch.device,
               warm_env: dict[str, str] | None = None) -> dict:
    """Sections 1 to 3 for one workload, each variant in its worker process: a first step (the compilation, for
    the compiled variant), two steps for the peak memory, then `args.reps` alternated timing samples. With
    `warm_env` (the compiled worker's kernel cache), the compile is then repeated by new processes that find the
    cache filled: the warm compile times of a second and a third run."""
    say(f"[{key}] {workload.label}, batch {workload.batch}")
    dynamo_worker = workers.get("compiled", workers["mocokit"])
    graphs0 = dynamo_worker.ask(op="dynamo")
    for name, worker in workers.items():
        worker.ask(op="build", variant=name, workload=asdict(workload), device=str(device),
                   precision=args.precision, compile=name == "compiled", threads=args.threads,
                   compile_backend=args.compile_backend)
    first = {}
    for name, worker in workers.items():
        first[name] = worker.ask(op="first")
        say(f"[{key}] {name}: first step {first[name]['seconds']:.1f} s, loss {first[name]['loss']:.6f}")
    peak = {name: max(worker.ask(op="peak")["bytes"] for _ in range(2)) for name, worker in workers.items()}
    resident = {name: worker.ask(op="peak_resident")["bytes"] for name, worker in workers.items()}
    samples = alternate({name: partial(lambda w: w.ask(op="time", steps=args.steps)["seconds"], worker)
                         for name, worker in workers.items()}, args.reps)
    graphs1 = dynamo_worker.ask(op="dynamo")
    dynamo = {k: graphs1[k] - graphs0[k] for k in graphs1}
    rates = {name: summary([workload.batch / s for s in seconds]) for name, seconds in samples.items()}
    for name in workers:
        say(f"[{key}] {name}: {rates[name]['median']:.2f} images/s (spread {rates[name]['spread']:.0%})")
    flops = step_flops(workload)
    step_seconds = {name: summary(seconds)["median"] for name, seconds in samples.items()}
    losses = {name: reply["loss"] for name, reply in first.items()}
    row = {
        "label": workload.label, "preset": workload.preset, "overrides": workload.overrides,
        "batch": workload.batch, "image_size": workload.image_size,
        "images_per_s": rates, "step_seconds": step_seconds,
        "speedup": rates["mocokit"]["median"] / rates["baseline"]["median"],
        "first_step_seconds": {name: reply["seconds"] for name, reply in first.items()},
        # Same model, views and algorithm: the first losses agree up to rounding (compiled code reorders sums).
        "first_loss": losses,
        "first_loss_relative_difference": {name: abs(loss / losses["baseline"] - 1) for name, loss in losses.items()},
        "dynamo_graphs": dynamo["graphs"], "graph_breaks": dynamo["breaks"],
        "step_flops": flops,
        "flops_per_s": {name: flops / s for name, s in step_seconds.items()},
        "peak_step_bytes": peak,
        "peak_memory_ratio": peak["mocokit"] / peak["baseline"],
        # CPU: the resident set, which also holds what glibc keeps (mocokit's engine has it keep freed blocks)
        "peak_step_resident_bytes": resident,
        "peak_resident_ratio": (resident["mocokit"] / resident["baseline"]) if None not in resident.values() else None,
        "compiled": None,
    }
    if "compiled" in workers:
        compiled_first = first["compiled"]["compiled_seconds"]
        row["compiled"] = {
            "speedup_over_baseline": rates["compiled"]["median"] / rates["baseline"]["median"],
            "speedup_over_eager": rates["compiled"]["median"] / rates["mocokit"]["median"],
            # the compiling step less a compiled step: what compiling added to the first step
            "compile_seconds_first": compiled_first - step_seconds["compiled"],
            "compile_seconds_warm": [],
            "peak_memory_ratio": peak["compiled"] / peak["baseline"],
        }
        # A second run starts after the first has ended: Inductor writes some cache entries late (a warm process
        # started while the compiling one lived took 42 s instead of 8 s on 2 CPU cores), so the compiling worker
        # ends first.
        workers["compiled"].close()
        for _ in range(args.warm_runs if warm_env is not None else 0):  # new processes, the same kernel cache
            worker = Worker(warm_env)
            try:
                worker.ask(op="build", variant="compiled", workload=asdict(workload), device=str(device),
                           precision=args.precision, compile=True, threads=args.threads,
                           compile_backend=args.compile_backend)
                seconds = worker.ask(op="first")["compiled_seconds"] - step_seconds["compiled"]
            finally:
                worker.close()
            row["compiled"]["compile_seconds_warm"].append(seconds)
            say(f"[{key}] compiled again in a new process, kernel cache filled: {seconds:.1f} s")
    return row


def bench_epoch(args, device: torch.device) -> dict:
    """Section 4: one epoch of `mocokit pretrain` (demo preset) on a CIFAR-10 subset, per augmentation backend."""
    from bench_data import write_images

    from mocokit.engine.pretrain import pretrain

    n, batch = (64, 16) if args.tiny else (args.epoch_images, 128)
    base = ["train.epochs=1", f"train.batch_size={batch}", "monitor.knn_every_epochs=0", "run.tensorboard=false",
            "train.compile=false",
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
    """The Markdown tables the README shows."""
    lines = ["| workload | baseline images/s | mocokit images/s | speedup | mocokit GFLOP/s (of matmul) | peak tensor "
             "memory of a step, mocokit / baseline |",
             "|---|---|---|---|---|---|"]
    matmul = results["matmul_flops_per_s"]["median"]
    for row in results["steps"].values():
        rate = row["images_per_s"]
        peak = row["peak_step_bytes"]
        memory = f"{peak['mocokit'] / 2**20:.0f} / {peak['baseline'] / 2**20:.0f} MiB = {row['peak_memory_ratio']:.2f}"
        lines.append(
            f"| {row['label']}, batch {row['batch']} | {rate['baseline']['median']:.1f} "
            f"(±{rate['baseline']['spread'] / 2:.0%}) | {rate['mocokit']['median']:.1f} "
            f"(±{rate['mocokit']['spread'] / 2:.0%}) | **{row['speedup']:.2f}×** | "
            f"{row['flops_per_s']['mocokit'] / 1e9:.1f} ({row['flops_per_s']['mocokit'] / matmul:.0%}) | {memory} |")
    compiled = {k: row for k, row in results["steps"].items() if row.get("compiled")}
    if compiled:
        backend = results.get("compile_backend", "inductor")
        backend_note = "" if backend == "inductor" else f", backend {backend}"
        lines += ["", f"torch.compile (train.compile_scope=networks{backend_note}), the same run:", "",
                  "| workload | compiled images/s | × plain eager baseline | × mocokit eager | first compile | warm "
                  "compile (new processes) | peak tensor memory, compiled / baseline |",
                  "|---|---|---|---|---|---|---|"]
        for row in compiled.values():
            c, rate = row["compiled"], row["images_per_s"]["compiled"]
            warm = ", ".join(f"{w:.1f} s" for w in c["compile_seconds_warm"]) or "not measured"
            lines.append(f"| {row['label']} | {rate['median']:.1f} (±{rate['spread'] / 2:.0%}) | "
                         f"**{c['speedup_over_baseline']:.2f}×** | {c['speedup_over_eager']:.2f}× | "
                         f"{c['compile_seconds_first']:.0f} s | {warm} | {c['peak_memory_ratio']:.2f} |")
    lines.append("")
    lines.append(f"Matrix product {results['matmul_side']}² ({results['precision']}): {matmul / 1e9:.1f} GFLOP/s "
                 f"(median of {results['matmul_flops_per_s']['n']}). Step FLOPs: "
                 + ", ".join(f"{k} {row['step_flops'] / 1e9:.0f} GFLOP" for k, row in results["steps"].items())
                 + ". torch.compile: "
                 + ", ".join(f"{k} {row['dynamo_graphs']} graph(s), {row['graph_breaks']} graph breaks"
                             for k, row in compiled.items()) + ".")
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
        out["peak_memory_ratio"] = round(steps["v2"]["peak_memory_ratio"], 3)
    for k, row in steps.items():
        out[f"flops_fraction_{k}"] = round(row["flops_per_s"]["mocokit"] / matmul, 3)
        out[f"peak_memory_ratio_{k}"] = round(row["peak_memory_ratio"], 3)
        out[f"peak_resident_ratio_{k}"] = row["peak_resident_ratio"] and round(row["peak_resident_ratio"], 3)
    for k, row in steps.items():
        if row.get("compiled"):
            c = row["compiled"]
            out[f"compiled_step_speedup_{k}"] = round(c["speedup_over_baseline"], 3)
            out[f"compiled_over_eager_{k}"] = round(c["speedup_over_eager"], 3)
            out[f"compile_seconds_first_{k}"] = round(c["compile_seconds_first"], 1)
            if c["compile_seconds_warm"]:
                out[f"compile_seconds_warm_{k}"] = round(c["compile_seconds_warm"][0], 1)
    if "epoch" in results:
        for name, row in results["epoch"]["backends"].items():
            out[f"epoch_seconds_{name}"] = round(row["epoch_seconds"], 2)
        out["epoch_fraction_of_step_demo"] = round(results["epoch"]["backends"]["batched_in_memory"]["fed_fraction"], 3)
    out.update(machine=results["machine"], tiny=results["tiny"], date=results["date"])
    return out


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # see `Worker`
    parser.add_argument("--tiny", action="store_true", help="tiny models and data, to check that everything runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="autocast dtype of both variants (the matrix product uses the same)")
    parser.add_argument("--workloads", default="v2,v3,demo", help="comma-separated: v2, v3, demo (empty: none)")
    parser.add_argument("--reps", type=int, default=None, help="timing samples per variant (default 5; tiny: 2)")
    parser.add_argument("--steps", type=int, default=None, help="steps per sample (default 1 on CPU, 10 on CUDA)")
    parser.add_argument("--compiled", default=None,
                        help="comma-separated workloads also measured compiled (default v2,demo; tiny: demo; empty: "
                             "none): compile times reported apart, then --warm-runs new processes compile again "
                             "with the kernel cache filled")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile's backend for the compiled variants (default inductor, what training "
                             "uses); aot_eager traces the same graphs without generating code: the tiny test's "
                             "check that the compiled path runs, in seconds instead of minutes, with no speed-up")
    parser.add_argument("--warm-runs", type=int, default=None,
                        help="warm compiles of the demo workload (see --compiled; default 2, tiny: 1)")
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
    if args.worker:
        serve()
        return {}
    device = torch.device(args.device)
    suffix = "-tiny" if args.tiny else ""
    args.out = args.out or (REPO / "benchmarks" / ("out/results-tiny.json" if args.tiny else "results.json"))
    args.full_out = args.full_out or REPO / "benchmarks" / "out" / f"bench_step{suffix}.json"
    compiled = args.compiled if args.compiled is not None else ("demo" if args.tiny else "v2,demo")
    args.compiled = set(filter(None, compiled.split(",")))
    args.warm_runs = args.warm_runs if args.warm_runs is not None else (1 if args.tiny else 2)
    args.reps = args.reps or (2 if args.tiny else 5)
    args.steps = args.steps or (10 if device.type == "cuda" else 1)
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    started = time.perf_counter()

    results: dict = {"machine": machine(device), "tiny": args.tiny, "precision": args.precision,
                     "date": time.strftime("%Y-%m-%d %H:%M"), "reps": args.reps, "steps_per_rep": args.steps,
                     "compiled": sorted(args.compiled), "compile_backend": args.compile_backend, "steps": {}}
    results["matmul_side"] = 1024 if args.tiny else 4096
    results["matmul_flops_per_s"] = summary(matmul_flops_per_s(device, dtype or torch.float32, results["matmul_side"]))
    keys = list(filter(None, args.workloads.split(",")))
    with tempfile.TemporaryDirectory() as cache:
        # One process per variant (see Worker), each measuring every workload in turn. A fresh compile cache: the
        # compile time reported is that of a first run.
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        workers = {name: Worker(env) for name in ("baseline", "mocokit")} if keys else {}
        try:
            for key in keys:
                # the compiled variant in a new process per workload: its first compile finds nothing in memory
                these = {**workers, **({"compiled": Worker(env)} if key in args.compiled else {})}
                try:
                    results["steps"][key] = bench_step(key, (TINY if args.tiny else FULL)[key], these, args, device,
                                                       warm_env=env if key == "demo" else None)
                finally:
                    if "compiled" in these:
                        these["compiled"].close()
        finally:
            for worker in workers.values():
                worker.close()
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
