"""Writing and reading safetensors files: atomic, never overwriting by accident, metadata as JSON strings."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def check_writable(path: Path, force: bool) -> None:
    """FileExistsError when `path` exists and may not be overwritten (call before long work, to fail early)."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; choose another output file or pass --force to overwrite it")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any], force: bool) -> Path:
    """Write `tensors` to `path` with `metadata` (each value stored as JSON text, since safetensors metadata is
    str -> str). FileExistsError when `path` exists and not `force`. The file appears whole or not at all."""
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata={key: json.dumps(value) for key, value in metadata.items()})
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_safetensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (on the CPU) and the decoded metadata of a file written by `write_safetensors`."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = {key: json.loads(value) for key, value in (handle.metadata() or {}).items()}
    return tensors, metadata
