"""`mocokit pretrain CONFIG [key=value ...]`: MoCo pretraining into a run folder."""

from __future__ import annotations

import argparse

from mocokit.commands.common import add_config_arguments, add_json_flag, print_json

INTERRUPTED = 130  # the shell's code for a Ctrl-C: the run stopped gracefully and can be continued


def run(args: argparse.Namespace) -> int:
    from mocokit.engine.pretrain import pretrain
    from mocokit.training.run_config import load_config

    result = pretrain(load_config(args.config, args.overrides))
    if result.interrupted:
        return INTERRUPTED
    if not result.main_process:  # under torchrun, rank 0 reports for every process
        return 0
    if result.knn_top1 is not None and result.baseline_top1 is not None:
        print(f"kNN top-1: pretrained {result.knn_top1:.4f} | random init {result.baseline_top1:.4f} "
              f"({100 * (result.knn_top1 - result.baseline_top1):+.1f} points)")
    if args.json:
        print_json({
            "run_dir": str(result.run_dir), "completed": result.completed, "epochs": result.epochs_done,
            "steps": result.steps_done, "minutes": round(result.minutes, 2),
            "knn_top1": result.knn_top1, "knn_top5": result.knn_top5,
            "random_init_knn_top1": result.baseline_top1, "random_init_knn_top5": result.baseline_top5,
        })
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "pretrain", help="pretrain an encoder with MoCo",
        description="Pretrain with MoCo into a run folder (run.dir). An interrupted run continues from its last "
                    "checkpoint when started again with the same run.dir (resume=auto, the default).",
    )
    add_config_arguments(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)
