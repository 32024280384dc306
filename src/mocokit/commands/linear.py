"""`mocokit linear RUN [key=value ...]`: the linear probe on the frozen backbone, official protocols as presets."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from mocokit.commands.common import (
    add_json_flag,
    add_protocol_argument,
    add_random_init_argument,
    add_run_arguments,
    compare_with_random_init,
    finish_evaluation,
    late_options,
    open_evaluation,
    open_random_init,
)


def run(args: argparse.Namespace) -> int:
    from mocokit.evaluation.config import default_linear_protocol
    from mocokit.evaluation.linear import linear_probe
    from mocokit.training.runtime import resolve_device

    args = late_options(args)

    def official_or_fast(encoder) -> list[str]:
        on_gpu = resolve_device(encoder.config.train.device).type == "cuda"
        return [default_linear_protocol(encoder.config.model.version, encoder.is_vit, on_gpu)]

    session = open_evaluation(args, default_protocols=official_or_fast)
    baseline = open_random_init(args, session)
    result = linear_probe(session)
    print(f"linear probe ({result.mode}): top-1 {result.top1:.4f}, top-5 {result.top5:.4f} "
          f"[{result.seconds:.1f}s; every backbone tensor unchanged]")
    record = {"command": "linear", **session.describe(), **asdict(result)}
    compare_with_random_init(args, baseline, linear_probe, result, session, f"linear-{result.mode}", record)
    finish_evaluation(session, f"linear-{result.mode}", record, args.json)
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    add_protocol_argument(parser, "linear-fast on a CPU; on a GPU the official protocol of the run's MoCo version")
    add_random_init_argument(parser)
    add_json_flag(parser)


def register(commands) -> None:
    parser = commands.add_parser(
        "linear", help="linear probe on the frozen backbone",
        description="Train a new linear layer on the frozen backbone (eval mode) and report test top-1/top-5; "
                    "then check that every backbone tensor is unchanged. Protocols: linear-v1v2, linear-v3-resnet, "
                    "linear-v3-vit (official; linear.mode=auto: cached features on a CPU, augmented images on a GPU), "
                    "linear-fast (the CPU default: cached features, standardised, SGD 0.1 x B/256, cosine).",
    )
    add_run_arguments(parser, add_options)
    parser.set_defaults(handler=run)
