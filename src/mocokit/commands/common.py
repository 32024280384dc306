"""Argument conventions shared by the subcommands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def add_config_arguments(parser: argparse.ArgumentParser, what: str = "a preset name or a YAML file") -> None:
    parser.add_argument("config", help=what)
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value",  # a default: argparse then lists it as optional
        help="change any config field, e.g. train.epochs=5 data.path=/data/images optim.lr=0.1 resume=none",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def print_json(result: dict) -> None:
    print(json.dumps(result, default=str))


def add_run_arguments(parser: argparse.ArgumentParser,
                      add_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """RUN, key=value overrides and the command's options (`add_options(parser)`), for the commands that evaluate a
    pretrained encoder. Options may also come after RUN, between or after the overrides
    (`mocokit linear RUN --protocol linear-fast linear.epochs=10 --json`): a `*` positional cannot allow that
    (argparse fills it at RUN and then refuses later ones, bpo-14191), so the overrides take the rest of the line
    and `late_options(args)` parses the options out of them."""
    parser.add_argument("run", help="a run folder (evaluates its newest intact checkpoint: checkpoints/last.pt, "
                        "else previous.pt, as resume=auto), RUN@best (the checkpoint the label-free score ranks "
                        "best: checkpoints/best.pt) or a checkpoint file")
    overrides = parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, metavar="key=value",
        help="the run's config (data.path=..., data.label_fraction=0.1, train.device=cpu) or the evaluation's "
             "(eval.*, knn.*, linear.*, finetune.*; e.g. linear.epochs=10 eval.test_images=2000)",
    )
    overrides.required = False  # argparse would otherwise name it in "the following arguments are required"
    add_options(parser)
    parser.set_defaults(add_options=add_options, command_parser=parser)


def late_options(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the options written among the overrides parsed (they win over none given before RUN) and only
    key=value items left in `args.overrides`. An unknown option is a usage error (exit 2); -h prints the help."""
    parser: argparse.ArgumentParser = args.command_parser
    options = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    args.add_options(options)
    found, rest = options.parse_known_args(args.overrides)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        parser.exit(0)
    unknown = [item for item in rest if item.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    given = {name: value for name, value in vars(found).items() if value != options.get_default(name)}
    return argparse.Namespace(**{**vars(args), **given, "overrides": rest})


def open_evaluation(args: argparse.Namespace, default_protocols=lambda _encoder: []):
    """The evaluation session of `args.run` with the command's overrides and --protocol (`default_protocols`: a
    function of the encoder naming the protocols when none is given; none: the evaluation config's defaults), this
    process set to the run's train.threads."""
    from mocokit.evaluation.session import open_session
    from mocokit.training.process import configure_process

    session = open_session(args.run, args.overrides, protocol=args.protocol, default_protocols=default_protocols)
    configure_process(threads=session.encoder.config.train.threads)
    return session


def finetune_protocol(encoder) -> list[str]:
    """The fine-tuning protocol of the encoder's backbone (finetune-vit or finetune-resnet), the default of
    `mocokit finetune` and `mocokit transfer`."""
    from mocokit.evaluation.config import default_finetune_protocol

    return [default_finetune_protocol(encoder.is_vit)]


def add_protocol_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--protocol", default=None, metavar="NAME",
                        help=f"an evaluation preset (mocokit/presets/eval/) or a YAML file; default: {default}")


def add_random_init_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--random-init", default=None, metavar="CONFIG",
                        help="also evaluate CONFIG's network (a preset name or YAML file; its model section, on the "
                             "run's data and train.seed) at random initialisation, with the weights a pretraining "
                             "run starts from: the baseline pretraining must beat")


def finish_evaluation(session, name: str, record: dict, as_json: bool) -> None:
    """Save `record` to RUN/eval/<name>.json, then print it as the last line when --json was given."""
    record = save_evaluation(session, name, record)
    if as_json:
        print_json(record)


def save_evaluation(session, name: str, record: dict) -> dict:
    """Write `record`, with the path it is written to, as RUN/eval/<name>.json; returns what was written."""
    record = {**record, "result_file": str(session.output_dir / f"{name}.json")}
    session.save_result(name, record)
    return record


def open_random_init(args: argparse.Namespace, session):
    """With --random-init CONFIG: the evaluation session of the baseline (`random_init_session`: CONFIG's network
    on the run's data, initialised as pretraining initialises it), opened before the pretrained evaluation so that a
    CONFIG that cannot be used stops the command before any work. None without --random-init."""
    if not args.random_init:
        return None
    from mocokit.evaluation.session import random_init_session

    return random_init_session(session, args.random_init)


def compare_with_random_init(args: argparse.Namespace, baseline, evaluate, result, session, name: str,
                             record: dict) -> None:
    """With a baseline session (`open_random_init`): save the pretrained `record` as RUN/eval/<name>.json first (it
    is kept if the baseline fails), run `evaluate` on the baseline, print the gain of pretraining and add the
    baseline's top-1/top-5/seconds to `record`."""
    if baseline is None:
        return
    save_evaluation(session, name, record)
    measured = evaluate(baseline)
    print(f"random init ({args.random_init}): top-1 {measured.top1:.4f}, top-5 {measured.top5:.4f} "
          f"({100 * (result.top1 - measured.top1):+.1f} points for pretraining)")
    record.update(random_init_top1=measured.top1, random_init_top5=measured.top5, random_init_seconds=measured.seconds)
