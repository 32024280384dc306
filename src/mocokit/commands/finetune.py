"""`mocokit finetune RUN [key=value ...]`: end-to-end fine-tuning of the pretrained backbone with a new head."""

from __future__ import annotations

import argparse

from mocokit.commands.common import (
    add_json_flag,
    add_protocol_argument,
    add_run_arguments,
    finetune_protocol,
    finish_evaluation,
    late_options,
    open_evaluation,
)


def run(args: argparse.Namespace) -> int:
    from mocokit.evaluation.finetune import finetune

    args = late_options(args)
    session = open_evaluation(args, default_protocols=finetune_protocol)
    result = finetune(session)
    print(f"fine-tuned: top-1 {result.top1:.4f}, top-5 {result.top5:.4f} [{result.seconds:.1f}s]")
    finish_evaluation(session, "finetune", {"command": "finetune", **session.describe(), **result.record()},
                      args.json)
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    add_protocol_argument(parser, "finetune-resnet or finetune-vit, by the run's backbone")
    add_json_flag(parser)


def register(commands) -> None:
    parser = commands.add_parser(
        "finetune", help="fine-tune the pretrained backbone end to end",
        description="Fine-tune every layer with a new linear head on the labelled training split and report test "
                    "top-1/top-5 and the learning curve. Protocols: finetune-resnet, finetune-vit; "
                    "finetune.layer_decay=0.65 for layer-wise lr decay (ViT).",
    )
    add_run_arguments(parser, add_options)
    parser.set_defaults(handler=run)
