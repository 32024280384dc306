"""mocokit's cache folder, shared by what is kept between runs: downloaded model-zoo weights (weights/zoo.py), the
compiled kernels of torch.compile and what compiling measured on this machine (training/compilation.py)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_VARIABLE = "MOCOKIT_CACHE"  # the cache folder; default ~/.cache/mocokit


def cache_dir() -> Path:
    """$MOCOKIT_CACHE, else ~/.cache/mocokit."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "mocokit")
