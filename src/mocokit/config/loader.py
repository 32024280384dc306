"""Typed configuration loading: YAML presets and files, ``section.key=value`` overrides, strict validation.

Every config is a tree of dataclasses. This module turns nested dicts (from YAML) into that tree, checking each key
and each value's type on the way, so that a misspelt key or a wrong value is an error that names the key and says what
is allowed, never a silently ignored setting.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[T, ...]``,
``tuple[T1, T2]``, ``list[T]``, ``dict[str, Any]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from mocokit.errors import ConfigError

T = TypeVar("T")

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
BASE_KEY = "base"  # a YAML file may start from a preset or another file: `base: v2-cifar10`


# --------------------------------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_description(name: str) -> str:
    """The first comment line of a preset file: its one-line description."""
    for line in (PRESET_DIR / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _resolve_source(source: str | Path, relative_to: Path | None = None) -> Path:
    """A preset name or a YAML path -> the YAML file."""
    text = str(source)
    if text.endswith((".yaml", ".yml")) or "/" in text or text.startswith("."):
        path = Path(text)
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        return path
    path = PRESET_DIR / f"{text}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(text, preset_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown preset {text!r}.{hint} Run `mocokit presets` to list them, or pass a path to a YAML file."
        )
    return path


def read_yaml_tree(source: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a preset or YAML file as a nested dict, following `base:` links (later files override earlier)."""
    path = _resolve_source(source, relative_to=_seen[-1].parent if _seen else None)
    if path.resolve() in _seen:
        raise ConfigError(f"config {path} inherits from itself through `{BASE_KEY}:`")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(tree).__name__}")
    base = tree.pop(BASE_KEY, None)
    if base is None:
        return tree
    return merge_trees(read_yaml_tree(base, _seen + (path.resolve(),)), tree)


def merge_trees(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values in `update` win. Neither input is modified."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_trees(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------------- overrides


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings; each value is parsed as YAML (so `0.1`, `true`, `[1, 2]`, `null` work)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {override!r} must look like section.key=value, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: keep the text; the type check below decides whether a string is allowed
        update: dict[str, Any] = {}
        node = update
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        tree = merge_trees(tree, update)
    return tree


# --------------------------------------------------------------------------------------------------- typed build


def build_dataclass(cls: type[T], tree: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a nested dict, validating keys and value types. Missing keys keep defaults."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping of keys, got {tree!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in tree if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=3)
        hint = f" Did you mean {', '.join(_join(where, c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, str(key))!r}.{hint} Valid keys here: {', '.join(sorted(fields))}."
        )
    values = {name: _coerce(hints[name], tree[name], _join(where, name)) for name in fields if name in tree}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        # a section's own check names its keys in full (`optim.lr must be > 0`): no second prefix then
        message = str(error)
        named = not where or message.startswith(f"{where}.") or message.startswith(f"{where} ")
        raise ConfigError(message if named else f"{where}: {message}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against type `tp` (with the few safe conversions YAML needs) and return it."""
    origin = get_origin(tp)
    bad = ConfigError(f"{where} must be {_describe(tp)}, got {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if origin is Literal:
        # Compare type too: YAML's `true` must not match a Literal[1] (True == 1 in Python).
        if any(value == choice and type(value) is type(choice) for choice in get_args(tp)):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e3 in YAML is a float
            return int(value)
        raise bad
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise bad from None
        if number is None:
            raise bad
        if not math.isfinite(number):  # NaN passes every `x <= 0` check after this one: refuse it here
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {value!r}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise TypeError(f"unsupported config field type {tp!r} at {where}")  # a bug in mocokit, not the user's


def to_tree(config: Any) -> Any:
    """A dataclass tree -> plain dicts/lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_tree(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}
    if isinstance(config, (list, tuple)):
        return [to_tree(v) for v in config]
    if isinstance(config, dict):
        return {k: to_tree(v) for k, v in config.items()}
    return config
