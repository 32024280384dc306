"""`mocokit transfer RUN data.path=... [key=value ...]`: does pretraining pay? Fine-tuning from random
initialisation and from the pretrained weights, learning curves in one plot."""

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
    from mocokit.evaluation.transfer import transfer

    args = late_options(args)
    session = open_evaluation(args, default_protocols=finetune_protocol)
    result = transfer(session)
    print(f"fine-tuned top-1: pretrained {result.pretrained.top1:.4f} | random init {result.random_init.top1:.4f} "
          f"({100 * result.gain:+.1f} points for pretraining); plot: {result.plot}")
    record = {"command": "transfer", **session.describe(), "pretrained_top1": result.pretrained.top1,
              "random_init_top1": result.random_init.top1, "gain": result.gain, "plot": str(result.plot),
              "pretrained": result.pretrained.record(), "random_init": result.random_init.record()}
    finish_evaluation(session, "transfer", record, args.json)
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    add_protocol_argument(parser, "finetune-resnet or finetune-vit, by the run's backbone")
    add_json_flag(parser)


def register(commands) -> None:
    parser = commands.add_parser(
        "transfer", help="fine-tune from random init and from the pretrained weights, side by side",
        description="Fine-tune the run's network on a (small) labelled dataset twice, from random initialisation "
                    "and from the pretrained weights, with the same recipe, head initialisation and batch order; "
                    "writes RUN/eval/transfer.png (both learning curves) and RUN/eval/transfer.json. Keep it small: "
                    "data.label_fraction=0.1 or data.max_images=N, finetune.epochs=N, eval.test_images=N.",
    )
    add_run_arguments(parser, add_options)
    parser.set_defaults(handler=run)
