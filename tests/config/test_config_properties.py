"""Property tests over random `key=value` overrides (hypothesis): every invalid config ends, through the command line,
in one clear `mocokit: error:` line and exit status 2, never a traceback, and leaves no run folder behind; and every
config that loads can build its model (validation happens when loading, not in the middle of set-up)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import types
import typing
import uuid
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mocokit.cli import main
from mocokit.data.errors import DataError
from mocokit.errors import ConfigError
from mocokit.models import build_model
from mocokit.training.run_config import Config, load_config


def leaf_fields(cls=Config, prefix="") -> dict[str, typing.Any]:
    """Every settable key of the config, dotted (model.width, train.seed, resume, ...) -> its type."""
    fields = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            fields |= leaf_fields(hints[field.name], f"{prefix}{field.name}.")
        else:
            fields[prefix + field.name] = hints[field.name]
    return fields


# Left alone: where the data is (the test points it at a missing folder), whether to download it, and the run folder.
FIELDS = {k: t for k, t in leaf_fields().items() if k not in ("data.path", "data.download", "data.root", "run.dir")}
KEYS = sorted(FIELDS)
MODEL_KEYS = [k for k in KEYS if k.startswith("model.")]

INTS = st.one_of(st.integers(-3, 300), st.integers(-(10**20), 10**20),
                 st.sampled_from([-1, 0, 1, 2**31, 2**32, 2**63, 2**64, 10**6]))  # edges of C integer types
FLOATS = st.one_of(st.floats(-2, 2), st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([".nan", ".inf", "-.inf", "1e400", "-0.0", "1e-4", "1e-320"]))
JUNK = st.one_of(
    st.sampled_from(["true", "false", "null", "~", "", "[]", "{}", "[1, 2]", "[0.9, 0.95]", "{a: 1}", "'x'", "[",
                     "{", ": :", "- a", "2024-01-01", "0x10", "cpu", "cuda", "cuda:7", "meta", "auto", "timm:nope"]),
    st.text(max_size=12),
)


def typed_values(tp) -> st.SearchStrategy[str]:
    """YAML text mostly of the field's own type (so that many configs load and reach the run's set-up, where the
    remaining checks are), sometimes of any other."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        own = st.sampled_from([str(a) for a in args])
    elif origin in (typing.Union, types.UnionType):
        own = st.one_of([st.just("null") if a is type(None) else typed_values(a) for a in args])
    elif tp is bool:
        own = st.sampled_from(["true", "false"])
    elif tp is int:
        own = INTS.map(str)
    elif tp is float:
        own = FLOATS.map(str)
    elif tp is str:
        own = st.one_of(st.text(max_size=12), st.sampled_from(["resnet18", "vit_small", "timm:nope", "cuda", "meta"]))
    elif origin in (list, tuple):
        own = st.lists(FLOATS.map(str), max_size=3).map(lambda items: f"[{', '.join(items)}]")
    else:
        own = st.sampled_from(["{}", "{drop_path_rate: 0.1}", "{nope: 1}"])
    return st.one_of(own, own, own, JUNK)  # 3 in 4: the field's type


UNKNOWN_KEYS = st.one_of(
    st.sampled_from(KEYS).map(lambda k: k + "x"),  # a typo
    st.sampled_from(KEYS).map(lambda k: k + ".deeper"),  # below a leaf
    st.sampled_from(["model", "train", "nosuch.key", "train..epochs", ".x", "x.", "data.path.x"]),
    st.text(alphabet="abcdefghij._", min_size=1, max_size=12),
)


@st.composite
def overrides(draw, keys=KEYS, unknown=True) -> list[str]:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        if unknown and draw(st.integers(0, 9)) == 0:
            items.append(f"{draw(UNKNOWN_KEYS)}={draw(JUNK)}")
        else:
            key = draw(st.sampled_from(keys))
            items.append(f"{key}={draw(typed_values(FIELDS[key]))}")
    return items


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("config-properties")


@contextlib.contextmanager
def torch_settings_restored():
    """A run's set-up changes process-wide settings (threads, deterministic kernels); keep the test process's."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=overrides())
def test_every_bad_config_is_one_clear_line_exit_2_and_no_run_folder(scratch, items):
    run = scratch / f"run-{uuid.uuid4().hex}"
    argv = ["pretrain", "v2-cifar10", *items, f"data.path={scratch / 'no-such-data'}", f"run.dir={run}"]
    stderr = io.StringIO()
    with torch_settings_restored(), contextlib.redirect_stderr(stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are not errors; they go to stderr too
        code = main(argv)
    lines = stderr.getvalue().splitlines()
    assert code == 2, (argv, lines)
    assert len(lines) == 1 and lines[0].startswith("mocokit: error: "), (argv, lines)
    assert "Traceback" not in stderr.getvalue()
    assert not run.exists(), (argv, "left a run folder")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=overrides(keys=MODEL_KEYS, unknown=False),
       preset=st.sampled_from(["v2-cifar10", "v3-cifar10", "v3-vit-cifar10", "v1-imagenet"]))
def test_a_config_that_loads_builds_its_model(items, preset):
    try:
        cfg = load_config(preset, items)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    except DataError as error:  # a value `auto` derives from the images (training/auto.py): none are here
        assert any(item.endswith("=auto") for item in items), items
        assert "\n" not in str(error) and "data." in str(error)
        return
    try:
        with torch.device("meta"), warnings.catch_warnings():  # meta: shapes only, no memory, any size
            warnings.simplefilter("ignore")
            model = build_model(cfg, dataset_size=1000)  # the memory-bank dictionary needs it
    except ConfigError as error:  # only backbone_args (timm's keyword arguments) are left to the build to check
        assert "model.backbone_args" in str(error) and "\n" not in str(error)
        return
    assert sum(p.numel() for p in model.parameters()) > 0
