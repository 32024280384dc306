"""In-memory mode: decode every image once and keep its uint8 pixels, for datasets that fit in RAM.

`data.in_memory=None` (auto) estimates the decoded size from the headers of a sample of images (header reads do not
decode) and decodes everything when the estimate is within `data.memory_budget_mb`. Decoding runs in
`data.num_workers` processes. Unreadable images are left out (each named in a warning, then the count); more than
`data.max_bad_fraction` of them is a DataError. Images of one shared size are stored as one N x H x W x 3 uint8
tensor, which DataLoader workers share without copies.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mocokit.data.errors import DataError
from mocokit.data.imagefile import UnreadableImage
from mocokit.data.robust import UnreadableImageWarning
from mocokit.data.sources import ArraySource, FileSource

_SAMPLE = 64  # images whose headers are read to estimate the decoded size


def estimate_decoded_bytes(source: FileSource) -> int:
    """Estimated bytes of all images decoded to uint8 RGB, from the headers of up to 64 evenly spaced images (at the
    size they are decoded to: large JPEGs scaled down while decoding, see `decode_rgb`)."""
    n = len(source)
    picks = np.unique(np.linspace(0, n - 1, num=min(n, _SAMPLE)).astype(int))
    pixels = []
    for index in picks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's decompression-bomb warning: decoding refuses those, by name
                with Image.open(io.BytesIO(source.read_bytes(int(index)))) as image:  # header only
                    side = source.decode_side
                    if side is not None and min(image.size) >= 2 * side:
                        image.draft(image.mode, (side, side))  # a large JPEG is decoded scaled down (decode_rgb)
                    pixels.append(image.width * image.height)
        except Exception:  # unreadable, or a decompression bomb PIL refuses to open: counted when decoding for real
            continue
    mean_pixels = float(np.mean(pixels)) if pixels else 0.0
    return int(mean_pixels * 3 * n)


def wants_memory(in_memory: bool | None, budget_mb: int, source: FileSource | ArraySource) -> bool:
    """Whether to decode `source` into memory: always for sources already in memory, else by config or budget."""
    if isinstance(source, ArraySource):
        return False  # already decoded (or memory-mapped): nothing to do
    if in_memory is not None:
        return in_memory
    return estimate_decoded_bytes(source) <= budget_mb * 2**20


class _Decode(Dataset):
    def __init__(self, source: FileSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return index, np.asarray(self.source.read(index)), ""
        except UnreadableImage as error:
            return index, None, str(error)


def load_into_memory(source: FileSource, num_workers: int, max_bad_fraction: float) -> ArraySource:
    """Decode every image of `source` once; the readable ones become an ArraySource (same order, same names)."""
    loader = DataLoader(_Decode(source), batch_size=256, num_workers=num_workers, collate_fn=list)
    arrays: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[str] = []
    for batch in loader:
        for index, pixels, error in batch:
            if pixels is None:
                bad.append(source.paths[index])
                warnings.warn(
                    f"skipping unreadable image {source.paths[index]!r} in {source.where}: {error}",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
            else:
                arrays.append(pixels)
                kept.append(index)
    n = len(source)
    if bad:
        warnings.warn(
            f"{len(bad)} of {n} images in {source.where} were unreadable and skipped",
            UnreadableImageWarning,
            stacklevel=2,
        )
    if len(bad) > max_bad_fraction * n or not kept:
        examples = ", ".join(repr(name) for name in bad[:5])
        raise DataError(
            f"{len(bad)} of {n} images in {source.where} are unreadable (more than data.max_bad_fraction="
            f"{max_bad_fraction}), e.g. {examples}. Fix or delete those files, or raise data.max_bad_fraction."
        )
    shapes = {a.shape for a in arrays}
    # One shape: a single N x H x W x 3 tensor (shared by workers); else a list of H x W x 3 arrays.
    pixels = torch.from_numpy(np.stack(arrays)) if len(shapes) == 1 else arrays
    return ArraySource(
        pixels,
        [source.labels[i] for i in kept],
        source.classes,
        [source.paths[i] for i in kept],
        f"{source.where} (in memory)",
    )
