"""Checkpoints: written atomically, read without executing code, refused with a clear message when foreign.

A checkpoint is a dict of tensors and plain values saved with `torch.save` and read with
`torch.load(weights_only=True)`, which unpickles only tensors and primitive containers: a file crafted to run code
is refused, never executed.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "mocokit-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically: a temporary file in the same folder, flushed to disk, then renamed
    over the target. A kill at any moment leaves either the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a mocokit checkpoint safely; CheckpointError for a missing, damaged, foreign or newer-format file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip/pickle errors, or a pickle that asks for code: all mean "not usable"
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "It may be truncated, corrupt, or not a mocokit checkpoint; resume from another one."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mocokit checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this mocokit reads version {FORMAT_VERSION}. "
            "Use the mocokit release that wrote it."
        )
    return payload


# ------------------------------------------------------------------------------------------------ RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every random generator a training step may draw from, as tensors and plain values."""
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"name": numpy_state[0], "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
                  "pos": int(numpy_state[2]), "has_gauss": int(numpy_state[3]), "gauss": float(numpy_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
