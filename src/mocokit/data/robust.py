"""Reading items so that a few unreadable files do not stop a run, and too many do.

An unreadable file (corrupt, truncated, not really an image) is flagged, named in a warning, and replaced by the
next readable item. The flags live in a shared-memory tensor, so the flags set in DataLoader worker processes are
visible to the main process, which can report the count at the end of an epoch (`report`). When more than
`max_bad_fraction` of the dataset is unreadable, reading raises DataError (in a worker, the DataLoader re-raises it).
"""

from __future__ import annotations

import warnings

import torch
from PIL import Image

from mocokit.data.errors import DataError
from mocokit.data.imagefile import UnreadableImage


class UnreadableImageWarning(UserWarning):
    """An image file was skipped because it could not be decoded."""


class SkippingReader:
    """`read(i)` returns (image, j): image j is item i, or the next readable item after it when i is unreadable."""

    def __init__(self, source, max_bad_fraction: float) -> None:
        self.source = source
        self.max_bad_fraction = max_bad_fraction
        self.bad = torch.zeros(
            len(source), dtype=torch.uint8
        ).share_memory_()  # 1: item known to be unreadable

    def read(self, index: int) -> tuple[Image.Image, int]:
        n = len(self.source)
        for step in range(n):
            j = (index + step) % n
            if self.bad[j]:
                continue
            try:
                return self.source.read(j), j
            except UnreadableImage as error:
                self.bad[j] = 1
                warnings.warn(
                    f"skipping unreadable image {self.source.paths[j]!r} in {self.source.where}: {error}",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
                self._raise_if_too_many()
        raise DataError(f"no image in {self.source.where} can be read; check data.path")

    def unreadable(self) -> list[str]:
        """Names of the items found unreadable so far (in any process)."""
        return [self.source.paths[int(i)] for i in torch.nonzero(self.bad).flatten()]

    def report(self) -> int:
        """Warn with the number of images skipped so far (if any) and return it; raise DataError if too many."""
        count = int(self.bad.sum())
        if count:
            warnings.warn(
                f"{count} of {len(self.source)} images in {self.source.where} were unreadable and skipped",
                UnreadableImageWarning,
                stacklevel=2,
            )
        self._raise_if_too_many()
        return count

    def _raise_if_too_many(self) -> None:
        count, n = int(self.bad.sum()), len(self.source)
        if count > self.max_bad_fraction * n:
            examples = ", ".join(repr(name) for name in self.unreadable()[:5])
            raise DataError(
                f"{count} of {n} images in {self.source.where} are unreadable (more than "
                f"data.max_bad_fraction={self.max_bad_fraction}), e.g. {examples}. Fix or delete those files, or "
                "raise data.max_bad_fraction to skip them."
            )
