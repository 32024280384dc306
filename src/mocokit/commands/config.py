"""`mocokit config CONFIG [key=value ...]`: the resolved config and its derived values, without running anything;
`mocokit config --keys`: every key with its type, default and help (the comment on its dataclass field)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import tokenize
import typing
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from mocokit.training.run_config import Config, config_to_yaml, load_config

    if args.keys:
        for key, kind, default, text in field_rows(Config):
            print(f"{key:<34} {kind:<22} {default:<14} {text}")
        return 0
    if args.config is None:
        args.command_parser.error("give a CONFIG (a preset name or YAML file), or --keys")
    cfg = load_config(args.config, args.overrides)
    print(config_to_yaml(cfg), end="")
    print("# derived (not config keys):")
    for line in derived_lines(cfg):
        print(f"#   {line}")
    return 0


def derived_lines(cfg) -> list[str]:
    """The values a run computes from the config: scaled lr, steps per epoch (when the data is cheaply countable),
    the queue size against the dataset."""
    from mocokit.training.optim import scaled_learning_rate

    lines = [f"learning rate {scaled_learning_rate(cfg.optim, cfg.train.batch_size):.6g} "
             f"(optim.lr {cfg.optim.lr:g} scaled for the global batch {cfg.train.batch_size})"]
    images = cfg.derivation.data.images if cfg.derivation is not None else _count_images(cfg)
    if images is None:
        lines.append("steps per epoch: not counted (the images of data.path are not cheaply countable here; "
                     "pretrain prints them)")
    else:
        lines.append(f"steps per epoch {images // cfg.train.batch_size} ({images} images / batch "
                     f"{cfg.train.batch_size}, last partial batch dropped)")
    if cfg.model.uses_queue:
        ratio = f" = {cfg.model.queue_size / images:.2f} × N" if images else ""
        lines.append(f"K (model.queue_size) {cfg.model.queue_size}, N (images) {images or 'not counted'}{ratio}")
    return lines


def _count_images(cfg) -> int | None:
    """The number of training images when a folder can be listed without decoding (None otherwise)."""
    from mocokit.data.errors import DataError

    path = Path(str(cfg.data.path))
    if not path.is_dir():
        return None
    try:
        from mocokit.data.sources import open_source

        count = len(open_source(cfg.data, "train"))
    except (DataError, OSError, ValueError):
        return None
    return min(count, cfg.data.max_images) if cfg.data.max_images else count


def field_rows(cls, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) of every field of the dataclass `cls`, sections expanded; the help is the comment
    written after the field in its source file."""
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(kind):
            rows += field_rows(kind, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        name = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
        rows.append((key, str(name), repr(default) if isinstance(default, str) else str(default),
                     comments.get(f.name, "")))
    return rows


def _field_comments(cls) -> dict[str, str]:
    """field name -> the `# comment` on the line that declares it in the class body."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments, line_names = {}, {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.NAME and row not in line_names and token.start[1] == 4:
            line_names[row] = token.string
        elif token.type == tokenize.COMMENT and row in line_names:
            comments[line_names[row]] = token.string.lstrip("# ").strip()
    return comments


def register(commands) -> None:
    parser = commands.add_parser(
        "config", help="print a config resolved, with its derived values, or list every key",
        description="Print the resolved YAML of CONFIG with the overrides applied, then the values a run derives "
                    "from it (scaled lr, steps per epoch, K and N), and exit; --keys lists every key with its type, "
                    "default and help.",
    )
    parser.add_argument("config", nargs="?", default=None, help="a preset name or a YAML file")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="change any config field")
    parser.add_argument("--keys", action="store_true", help="list every key with its type, default and help")
    parser.set_defaults(handler=run, command_parser=parser)

