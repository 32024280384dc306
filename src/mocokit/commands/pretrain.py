"""`mocokit pretrain CONFIG [key=value ...]`: MoCo pretraining into a run folder."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mocokit.commands.common import add_config_arguments, add_json_flag, print_json

INTERRUPTED = 130  # the shell's code for a Ctrl-C: the run stopped gracefully and can be continued


def run(args: argparse.Namespace) -> int:
    from mocokit.engine.pretrain import pretrain
    from mocokit.training.run_config import load_config

    started = time.time()
    cfg = load_config(args.config, args.overrides)
    if cfg.derivation is not None and os.environ.get("RANK", "0") == "0":  # `auto` values: what was chosen, and why
        print("\n".join(cfg.derivation.lines()), flush=True)
    args.on_interrupt = lambda: interrupted_message(cfg.run.dir, cfg.name, started)
    result = pretrain(cfg)
    if result.interrupted:
        return INTERRUPTED
    if not result.main_process:  # under torchrun, rank 0 reports for every process
        return 0
    if result.knn_top1 is not None:  # one line: the pretrained kNN against each baseline measured
        baselines = [(name, value) for name, value in (("random init", result.baseline_top1),
                                                       ("raw pixels", result.pixel_top1)) if value is not None]
        if baselines:
            print(f"kNN top-1: pretrained {result.knn_top1:.4f} | " + " | ".join(
                f"{name} {value:.4f} ({100 * (result.knn_top1 - value):+.1f} points)" for name, value in baselines))
    if args.json:
        print_json({
            "run_dir": str(result.run_dir), "completed": result.completed, "epochs": result.epochs_done,
            "steps": result.steps_done, "minutes": round(result.minutes, 2),
            "knn_top1": result.knn_top1, "knn_top5": result.knn_top5,
            "random_init_knn_top1": result.baseline_top1, "random_init_knn_top5": result.baseline_top5,
            "pixel_knn_top1": result.pixel_top1, "pixel_knn_top5": result.pixel_top5,
        })
    return 0


def interrupted_message(run_dir: str, config_name: str, started: float) -> str:
    """What a Ctrl-C that stopped `pretrain` at once (a second press, or one before training began) leaves: the run
    folder's newest checkpoint, or none yet. With run.dir empty the folder is the `runs/<config>-<time>` made by
    this command (the newest one created since it started), which a rerun must name to continue."""
    from mocokit.training.rundir import checkpoint_candidates

    if run_dir:
        folder: Path | None = Path(run_dir)
    else:
        made = [p for p in Path("runs").glob(f"{config_name or 'run'}-*") if p.stat().st_mtime >= started - 1]
        folder = max(made, key=lambda p: p.stat().st_mtime, default=None)
    checkpoints = checkpoint_candidates(folder) if folder is not None else []
    if not checkpoints:
        return "mocokit: interrupted before the first checkpoint was written; run the same command again to start"
    again = "the same command" if run_dir else f"the same command with run.dir={folder}"
    return (f"mocokit: interrupted; the last checkpoint ({checkpoints[0]}) is kept: run {again} to continue from it "
            "(resume=auto)")


def register(commands) -> None:
    parser = commands.add_parser(
        "pretrain", help="pretrain an encoder with MoCo",
        description="Pretrain with MoCo into a run folder (run.dir). An interrupted run continues from its last "
                    "checkpoint when started again with the same run.dir (resume=auto, the default).",
    )
    add_config_arguments(parser)
    add_json_flag(parser)
    parser.set_defaults(handler=run)
