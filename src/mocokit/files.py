"""Output files that appear whole or not at all: written under a temporary name in the same folder, then renamed
(a rename within one file system is atomic). An interrupted or failed writer leaves no partial file under the real
name, so the same command can simply be run again."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yields a temporary path next to `path` (its folder is created); when the block ends normally the file
    written there replaces `path`, otherwise (an exception, a KeyboardInterrupt) it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path | str, text: str) -> Path:
    """`Path.write_text` (UTF-8) through `atomic_output`."""
    with atomic_output(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)
