"""Where torch.compile's time goes for a MoCo step, against the same network trained plainly (issue 20).

    python benchmarks/compile_profile.py CASE [CASE ...] [--profile] [--reps 5]

Each CASE runs in this process after the previous ones (run one case per process for compile times that do not
profit from an earlier case's warm in-memory caches; `--fresh-cache` gives each process an empty Inductor cache).
A case is `network:mode`:
- network: `plain` (the demo's backbone + a linear classifier, cross-entropy, SGD: a supervised step),
  `plain-split` (the same with the demo's 8 BatchNorm groups), `demo` (the demo preset's MoCo v2 step),
  `demo-nosplit` (demo with model.bn_splits=1), `v2` (the v2-cifar10 preset, standard width);
  suffix `@1` for standard width on plain networks (`plain@1`), `+nchw` to turn channels_last off;
- mode: `eager`, `whole` (torch.compile of the whole forward, mocokit's train.compile=true before issue 20),
  `networks` (each backbone, head and predictor compiled on its own: train.compile_scope=networks).
Prints per case: first-step seconds (compilation included), median step seconds over --reps samples, images/s,
Dynamo graphs and breaks; with --profile the top ops of one step by self CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mocokit import load_config
from mocokit.engine.step import StepRunner
from mocokit.models import build_model
from mocokit.models.backbones import build_backbone
from mocokit.models.shuffle_bn import split_batch_norms
from mocokit.training.cpu_memory import reuse_freed_memory
from mocokit.training.optim import build_optimizer, scaled_learning_rate

BATCH, SIZE = 128, 32


def parse(case: str) -> tuple[str, str, float | None, bool]:
    network, mode = case.split(":")
    channels_last = not network.endswith("+nchw")
    network = network.removesuffix("+nchw")
    width = None
    if "@" in network:
        network, width_text = network.split("@")
        width = float(width_text)
    return network, mode, width, channels_last


def build_case(case: str):
    """A `step()` callable for CASE and the function that returns its first-step compile seconds."""
    network, mode, width, channels_last = parse(case)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    x1 = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    x2 = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    if channels_last:
        x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    if network.startswith("plain"):
        overrides = [] if width is None else [f"model.width={width}"]
        cfg = load_config("demo", overrides=overrides)
        backbone = build_backbone(cfg.model)
        if network == "plain-split":
            split_batch_norms(backbone, cfg.model.bn_splits)
        model = nn.Sequential(backbone, nn.Linear(backbone.num_features, 10))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        labels = torch.randint(0, 10, (BATCH,), generator=generator)
        forward = model if mode == "eager" else torch.compile(model)

        def step():
            loss = F.cross_entropy(forward(x1), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        return step
    preset = {"demo": "demo", "demo-nosplit": "demo", "v2": "v2-cifar10"}[network]
    overrides = ["model.bn_splits=1"] if network == "demo-nosplit" else []
    cfg = load_config(preset, overrides=overrides)
    moco = build_model(cfg).train()
    if channels_last:
        moco = moco.to(memory_format=torch.channels_last)
    lr = scaled_learning_rate(cfg.optim, BATCH)
    runner = StepRunner(moco, build_optimizer(moco, cfg.optim, lr), torch.device("cpu"), nullcontext,
                        channels_last=channels_last, compile=mode != "eager",
                        compile_scope="step" if mode == "whole" else "networks")
    return lambda: runner((x1, x2), lr, cfg.model.momentum).loss


def dynamo_counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def measure(case: str, reps: int, profile: bool) -> dict:
    graphs0, breaks0 = dynamo_counts()
    step = build_case(case)
    started = time.perf_counter()
    first_loss = float(step())
    first = time.perf_counter() - started
    step()  # a second step: lazily built state (optimiser buffers) out of the timed samples
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    median = statistics.median(samples)
    graphs1, breaks1 = dynamo_counts()
    row = {"case": case, "first_step_s": round(first, 2), "step_s": round(median, 4),
           "spread": round((max(samples) - min(samples)) / median, 3), "images_per_s": round(BATCH / median, 1),
           "graphs": graphs1 - graphs0, "breaks": breaks1 - breaks0, "first_loss": first_loss}
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        row["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25,
                                                   max_name_column_width=70)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile-times", action="store_true", help="Dynamo's compile-time breakdown")
    parser.add_argument("--split-bn", choices=["reshape", "grouped"], default="grouped",
                        help="how SplitBatchNorm2d is compiled: grouped (mocokit's), reshape (its eager form)")
    parser.add_argument("--out", type=Path, default=None, help="append each row as a JSON line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.split_bn == "reshape":  # the compiled form before issue 20: the eager form traced as it is
        from mocokit.models.shuffle_bn import SplitBatchNorm2d

        SplitBatchNorm2d._grouped_forward = SplitBatchNorm2d._reshaped_forward
    reuse_freed_memory()
    for case in args.cases:
        row = measure(case, args.reps, args.profile)
        table = row.pop("profile", None)
        print(json.dumps(row), flush=True)
        if table:
            print(table, flush=True)
        if args.compile_times:
            from torch._dynamo.utils import compile_times

            print(compile_times(repr="str", aggregate=True), flush=True)
            from torch._dynamo.utils import counters

            print({k: dict(v) for k, v in counters.items() if k in ("inductor", "aot_autograd")}, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
