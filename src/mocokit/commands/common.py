"""Argument conventions shared by the subcommands."""

from __future__ import annotations

import argparse
import json


def add_config_arguments(parser: argparse.ArgumentParser, what: str = "a preset name or a YAML file") -> None:
    parser.add_argument("config", help=what)
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="change any config field, e.g. train.epochs=5 data.path=/data/images optim.lr=0.1 resume=none",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results as the last line")


def print_json(result: dict) -> None:
    print(json.dumps(result, default=str))
