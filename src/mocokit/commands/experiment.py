"""`mocokit experiment NAME [key=value ...]`: one of the MoCo papers' experiments, its table and its figure."""

from __future__ import annotations

import argparse
from pathlib import Path

from mocokit.commands.common import add_json_flag, print_json

SCALES = ("small", "medium")  # the scales of this machine; --smoke and --paper-scale are the other two


def run(args: argparse.Namespace) -> int:
    from mocokit.commands.common import late_options
    from mocokit.experiments import EXPERIMENTS, run_experiment

    args = late_options(args)  # options may also follow NAME and the overrides

    if args.name == "list" or args.name not in EXPERIMENTS:
        for name, experiment in EXPERIMENTS.items():
            print(f"{name:<14}  {experiment.title}")
        if args.name == "list":
            return 0
        print(f"mocokit: error: no experiment {args.name!r}; choose one of the above", flush=True)
        return 2
    experiment = EXPERIMENTS[args.name]
    chosen = [option for option, given in (("--smoke", args.smoke), ("--paper-scale", args.paper_scale),
                                           (f"--scale {args.scale}", args.scale is not None)) if given]
    if len(chosen) > 1:
        print(f"mocokit: error: choose one of {', '.join(chosen)}, not several", flush=True)
        return 2
    mode = "smoke" if args.smoke else "paper" if args.paper_scale else args.scale or "small"
    folder = Path(args.out) / (experiment.name + ("" if mode == "small" else f"-{mode}"))
    result = run_experiment(experiment, folder, args.overrides, mode=mode)
    if result.interrupted:
        return 130
    print(result.table.read_text(), end="")
    print(f"table: {result.table}\nresults: {result.results}\nfigure: {result.figure}\n"
          f"time: {result.minutes:.1f} min")
    if args.json:
        print_json({"experiment": experiment.name, "folder": str(folder), "minutes": round(result.minutes, 2),
                    "variants": [r.row() for r in result.variants]})
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "experiment", help="rerun one of the MoCo papers' experiments",
        description="Run a MoCo paper experiment (`list` lists them) at a small scale (about 20 minutes on 2 CPU "
                    "cores), a medium one (--scale medium: about 60 minutes, where the paper's effect can show), "
                    "the paper's (--paper-scale) or a few steps (--smoke), writing a table and a figure. Each "
                    "variant is a pretraining run under OUT/NAME/; running the command again continues an "
                    "interrupted one.",
    )
    parser.add_argument("name", help="the experiment, or `list`")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                        help="config changes for every variant, e.g. data.path=../shared/data/cifar10-jpg.tar.gz "
                             "train.epochs=10 train.device=cuda")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few images (a test that it runs)")
    parser.add_argument("--scale", choices=SCALES, default=None,
                        help="small (the default: about 20 minutes on 2 CPU cores) or medium (about 60 minutes, "
                             "designed so that the paper's effect can show; some variants run over two seeds)")
    parser.add_argument("--paper-scale", action="store_true",
                        help="the paper's scale: ImageNet presets and schedules, for GPUs (give data.path)")
    parser.add_argument("--out", default="runs/experiments",
                        help="where the experiment folders go (default: %(default)s)")
    add_json_flag(parser)
    parser.set_defaults(handler=run, command_parser=parser, add_options=_options)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--scale", choices=SCALES, default=None)
    parser.add_argument("--paper-scale", action="store_true")
    parser.add_argument("--out", default="runs/experiments")
    parser.add_argument("--json", action="store_true")
