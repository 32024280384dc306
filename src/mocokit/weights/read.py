"""Reading a weights file without running code from it, and naming what in it is not weights.

A `.safetensors` file holds tensors only. Any other file is read with `torch.load(weights_only=True)`, which
unpickles tensors and plain containers and refuses anything else: the official MoCo files (`epoch`, `arch`,
`state_dict`, `optimizer`, and `scaler` for v3) are such files, their optimiser state being dicts of ints, floats
and tensors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from mocokit.weights.errors import WeightsError
from mocokit.weights.layouts import ForeignWeights, map_layout
from mocokit.weights.zoo import looks_like_zoo_name, zoo_file

MOCOKIT_CHECKPOINT = "mocokit-checkpoint"  # the format marker of mocokit's own checkpoints (training/checkpoint.py)
# entries of a training checkpoint that hold the weights, in the order they are looked for
WEIGHT_ENTRIES = ("state_dict", "model", "module")


def file_sha256(path: Path | str) -> str:
    """"sha256:<hex>" of the file's bytes (the record of which weights a run started from)."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return f"sha256:{hasher.hexdigest()}"


def read_weights(path: Path | str, fmt: str = "auto", content: Any = None) -> ForeignWeights:
    """The tensors of a weights file under mocokit's MoCo names (`map_layout`), with what was left out and why.
    path: a file, or a model zoo name (`mocokit.weights.zoo`: the cached official file, downloaded when absent).
    fmt: one of FORMATS (auto: recognised from the key names). WeightsError naming the file when it cannot be read
    safely, holds no state dict, or its keys are of no known layout (or not of `fmt`). content: the file's content
    when the caller has read it already (a verified mocokit checkpoint)."""
    if looks_like_zoo_name(str(path)):  # moco-v2-800ep-r50: the official file, from the cache or downloaded
        path = zoo_file(str(path))
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    content = _load(path) if content is None else content
    state, extras = _state_dict(content, path)
    if extras.get("format") == MOCOKIT_CHECKPOINT:  # a mocokit checkpoint: its other entries are the run's state
        extras = {}
    ignored = [f"{name!r} ({_what(name)})" for name in extras if name != "arch"]
    return map_layout(state, fmt, path, arch=extras.get("arch") if isinstance(extras.get("arch"), str) else None,
                      ignored=ignored, sha256=file_sha256(path))


def _load(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:
            raise WeightsError(f"{path} is not a readable safetensors file ({error})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickle that asks for code, or not a torch file at all
        first = (str(error).splitlines() or [type(error).__name__])[0][:300]
        raise WeightsError(
            f"{path} cannot be read safely with torch.load(weights_only=True): {first}. mocokit never unpickles "
            "code; re-save the weights alone, e.g. torch.save({'state_dict': checkpoint['state_dict']}, path), "
            "where you trust the file"
        ) from None


def _state_dict(content: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(name -> tensor, the file's other top-level entries)."""
    if not isinstance(content, dict):
        raise WeightsError(f"{path} holds a {type(content).__name__}, not a dict of tensors or a checkpoint")
    if content and all(isinstance(v, torch.Tensor) for v in content.values()):
        return dict(content), {}
    for entry in WEIGHT_ENTRIES:
        inner = content.get(entry)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner), {k: v for k, v in content.items() if k != entry}
    entries = ", ".join(map(str, list(content)[:8]))
    raise WeightsError(f"{path} holds no state dict: a dict of tensors, or one under "
                       f"{', '.join(map(repr, WEIGHT_ENTRIES))} (its entries: {entries})")


def _what(entry: str) -> str:
    return {"optimizer": "the optimiser state: a new run builds its own", "epoch": "the epoch count",
            "scaler": "the fp16 loss scaler"}.get(entry, "not weights")
