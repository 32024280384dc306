"""`mocokit presets`: the presets with one line each."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from mocokit.config.loader import preset_description, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("presets", help="list the config presets", description="List the presets.")
    parser.set_defaults(handler=run)
