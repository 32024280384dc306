"""The feature cache: features of a dataset under a checkpoint, stored once next to the run, so that repeated
evaluations (kNN with another k, a fast linear probe) skip the backbone pass.

An entry's key is a hash of everything the features depend on: the checkpoint file's identity (resolved path, size,
modification time in ns: rewriting the checkpoint, as every epoch end does, gives a new key), the data settings that
choose and decode the images, the split and subset indices, the evaluation transform (its repr lists every parameter)
and the numeric precision. Entries are plain tensors written with `torch.save` and read with `weights_only=True`."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CACHE_FORMAT = 1


def checkpoint_identity(checkpoint: Path) -> dict[str, Any]:
    """What identifies a checkpoint file's content cheaply: resolved path, size and modification time (ns)."""
    stat = checkpoint.stat()
    return {"path": str(checkpoint.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(description: dict[str, Any]) -> str:
    """A stable 20-hex-digit hash of a JSON-able description (key order does not matter)."""
    text = json.dumps({"format": CACHE_FORMAT, **description}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class FeatureCache:
    """A folder of `features-<key>.pt` files, each {"features": N×D float32, "labels": N int64}."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"features-{key}.pt"

    def load(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The entry's (features, labels), or None when there is none (or it cannot be read: it is then rebuilt)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            return entry["features"], entry["labels"]
        except Exception:  # a damaged entry is a miss, never an error: it is written again
            return None

    def save(self, key: str, features: torch.Tensor, labels: torch.Tensor) -> Path:
        """Write atomically (a temporary file renamed over the target), so readers never see half an entry."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".features-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save({"features": features.cpu(), "labels": labels.cpu()}, handle)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path(key)
