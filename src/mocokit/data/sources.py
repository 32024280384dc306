"""Image sources: the images of one split, whatever `data.path` names, behind one small interface.

A source has `paths` (each item's source name: relative path, archive member or `cifar10/train/00042`),
`labels` (-1: unlabelled), `classes` (empty when unlabelled), `where` (for messages), `__len__`, and
`read(i) -> PIL RGB image` which raises `UnreadableImage` for a file that cannot be decoded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mocokit.data.archive import TarReader, index_archive, is_archive_path
from mocokit.data.config import DataConfig
from mocokit.data.errors import DataError
from mocokit.data.imagefile import UnreadableImage, decode_rgb
from mocokit.data.layout import SplitLayout, find_layout
from mocokit.data.named import NAMED_DATASETS, load_named, named_splits

# Files are decoded with sides of at least 4 x data.image_size (JPEGs beyond twice that: scaled while decoding). The
# smallest random crop of the recipes (area share 0.08 of the image: 0.28 of its side) then still spans more source
# pixels than the crop's output, and the evaluation resize (256/224 x S) only shrinks: no detail used is lost.
DECODE_SIDE_FACTOR = 4


class ImageSource(Protocol):
    paths: list[str]
    labels: list[int]
    classes: list[str]
    where: str

    def __len__(self) -> int: ...

    def read(self, index: int) -> Image.Image: ...


class FileSource:
    """Encoded image files, read by a function from a name to bytes (a folder or a tar archive)."""

    def __init__(self, layout: SplitLayout, read_bytes: Any, where: str, decode_side: int | None = None) -> None:
        self.paths, self.labels, self.classes = layout.paths, layout.labels, layout.classes
        self.where = where
        self._read_bytes = read_bytes  # picklable callable: relative path -> bytes
        self.decode_side = decode_side  # large JPEGs are decoded scaled down, to sides of at least this (decode_rgb)

    def __len__(self) -> int:
        return len(self.paths)

    def read_bytes(self, index: int) -> bytes:
        try:
            return self._read_bytes(self.paths[index])
        except OSError as error:
            raise UnreadableImage(f"{type(error).__name__}: {error}") from None

    def read(self, index: int) -> Image.Image:
        return decode_rgb(self.read_bytes(index), min_side=self.decode_side)


class FolderFiles:
    """Reads files below a folder (picklable, for DataLoader workers)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()


class ArraySource:
    """Decoded uint8 pixels held in memory (or memory-mapped): `pixels[i]` is one H x W x 3 array or tensor."""

    def __init__(
        self, pixels: Any, labels: list[int], classes: list[str], paths: list[str], where: str
    ) -> None:
        self.pixels, self.labels, self.classes, self.paths, self.where = pixels, labels, classes, paths, where

    def __len__(self) -> int:
        return len(self.paths)

    def read_array(self, index: int) -> np.ndarray:
        return np.asarray(self.pixels[index])  # H x W x 3 uint8

    def read(self, index: int) -> Image.Image:
        return Image.fromarray(self.read_array(index))

    def square_size(self) -> int | None:
        """The common side when every image is square and of one size (known without reading), else None."""
        shape = getattr(self.pixels, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] == shape[2]:
            return int(shape[1])
        return None


@dataclass(frozen=True)
class SourceKind:
    """A kind of `data.path` (a named dataset, an archive, a folder): how to recognise it, list its splits and open
    one of them. `SOURCE_KINDS` holds them in the order they are tried; a new kind is one entry."""

    name: str
    matches: Callable[[DataConfig], bool]
    splits: Callable[[DataConfig], list[str]]
    open: Callable[[DataConfig, str], FileSource | ArraySource]


def _open_named(cfg: DataConfig, split: str) -> ArraySource:
    named = load_named(cfg.path, split, Path(cfg.root), cfg.download)
    paths = [f"{named.name}/{i:06d}" for i in range(len(named.labels))]
    labels = named.labels if cfg.labels != "none" else [-1] * len(named.labels)
    classes = named.classes if cfg.labels != "none" else []
    return ArraySource(named.pixels, labels, classes, paths, named.name)


def _open_files(cfg: DataConfig, split: str) -> FileSource:
    layouts, read_bytes = _scan(cfg)
    if split not in layouts:
        raise DataError(
            f"split {split!r} not found in {cfg.path}; it has {', '.join(layouts)}. Use a root with train/ and "
            "test/ (or val/) folders to evaluate on held-out images."
        )
    return FileSource(layouts[split], read_bytes, f"{cfg.path} ({split})", DECODE_SIDE_FACTOR * cfg.image_size)


def _files_splits(cfg: DataConfig) -> list[str]:
    return list(_scan(cfg)[0])


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind("named", lambda cfg: cfg.path in NAMED_DATASETS, lambda cfg: named_splits(cfg.path), _open_named),
    SourceKind("archive", lambda cfg: is_archive_path(cfg.path), _files_splits, _open_files),
    SourceKind("folder", lambda cfg: Path(cfg.path).expanduser().is_dir(), _files_splits, _open_files),
)


def source_kind(cfg: DataConfig) -> SourceKind:
    """The kind of `data.path`; DataError saying what it may be when it is none."""
    if not cfg.path:
        raise DataError(
            "data.path is empty; set it to a folder, a .tar/.tar.gz archive, or cifar10/cifar100/stl10"
        )
    kind = next((kind for kind in SOURCE_KINDS if kind.matches(cfg)), None)
    if kind is None:
        raise DataError(
            f"data.path {cfg.path!r} is neither a folder, a .tar/.tar.gz archive, nor one of "
            f"{', '.join(NAMED_DATASETS)}; check the path"
        )
    if cfg.download and kind.name != "named":
        raise DataError(f"data.download=true only applies to {', '.join(NAMED_DATASETS)}, not to {cfg.path}")
    return kind


def available_splits(cfg: DataConfig) -> list[str]:
    """The split names `data.path` offers, e.g. ["train", "test"] (a folder without splits: ["train"])."""
    return source_kind(cfg).splits(cfg)


def open_source(cfg: DataConfig, split: str) -> FileSource | ArraySource:
    """The images of `split` of the dataset `data.path` names (no decoding happens here), only those of
    data.classes when it is set (`only_classes`)."""
    source = source_kind(cfg).open(cfg, split)
    return source if cfg.classes is None else only_classes(source, cfg.classes)


class _Rows:
    """Rows `indices` of an indexable of images, without copying them: `rows[i]` is `pixels[indices[i]]`."""

    def __init__(self, pixels: Any, indices: list[int]) -> None:
        self.pixels, self.indices = pixels, indices
        shape = getattr(pixels, "shape", None)
        self.shape = None if shape is None else (len(indices), *shape[1:])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.pixels[self.indices[index]]


def only_classes(source: FileSource | ArraySource, classes: list[str]) -> FileSource | ArraySource:
    """The images of `source` whose class is one of `classes`, labelled 0..len-1 in the source's class order.
    DataError when the source has no labels or lacks one of the classes (naming the classes it has)."""
    if not source.classes:
        raise DataError(f"data.classes is set but {source.where} has no labels (class folders); it selects classes "
                        "of a labelled dataset")
    missing = [name for name in classes if name not in source.classes]
    if missing:
        raise DataError(f"data.classes: {source.where} has no class {', '.join(map(repr, missing))}; its classes: "
                        f"{', '.join(source.classes)}")
    kept_classes = [name for name in source.classes if name in classes]
    renumber = {source.classes.index(name): new for new, name in enumerate(kept_classes)}
    keep = [i for i, label in enumerate(source.labels) if label in renumber]
    labels = [renumber[source.labels[i]] for i in keep]
    paths = [source.paths[i] for i in keep]
    if isinstance(source, ArraySource):
        return ArraySource(_Rows(source.pixels, keep), labels, kept_classes, paths, source.where)
    layout = SplitLayout(paths=paths, labels=labels, classes=kept_classes)
    return FileSource(layout, source._read_bytes, source.where, source.decode_side)


def _scan(cfg: DataConfig) -> tuple[dict[str, SplitLayout], TarReader | FolderFiles]:
    """The layout of an archive or folder, and the picklable function that reads one of its files."""
    path = Path(cfg.path).expanduser()
    if is_archive_path(cfg.path):
        index = index_archive(path, Path(cfg.root).expanduser())
        return find_layout(list(index.members), index.dirs, str(path), cfg.labels), TarReader(index)
    files, dirs = walk_folder(path)
    return find_layout(files, dirs, str(path), cfg.labels), FolderFiles(path)


class SkippedFolderWarning(UserWarning):
    """A folder of a dataset was not scanned: a symbolic link loop, or a folder that cannot be listed."""


def walk_folder(root: Path) -> tuple[list[str], list[str]]:
    """Every file and folder below `root` (relative, '/'-separated), following symbolic links to folders.

    A link back to a folder the walk is already inside (a loop) would make the walk go round until the path is too
    long, listing the same images dozens of times: it is skipped with a warning. A folder that cannot be listed
    (permission denied) is skipped with a warning too. Files that cannot be read are found later, when read."""
    files: list[str] = []
    dirs: list[str] = []
    ancestors: dict[str, frozenset[tuple[int, int]]] = {str(root): frozenset({_identity(root)})}

    def unlistable(error: OSError) -> None:
        warnings.warn(f"skipping folder {error.filename}: it cannot be listed ({error.strerror})",
                      SkippedFolderWarning, stacklevel=4)

    for folder, subdirs, names in os.walk(root, followlinks=True, onerror=unlistable):
        inside = ancestors.pop(folder, frozenset())
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        kept = []
        for name in sorted(subdirs):
            child = os.path.join(folder, name)
            try:
                identity = _identity(Path(child))
            except OSError as error:  # a dangling link, or a loop of links to links
                warnings.warn(f"skipping {child}: {error.strerror}", SkippedFolderWarning, stacklevel=3)
                continue
            if identity in inside:
                warnings.warn(f"skipping {child}: a symbolic link loop back to {os.path.realpath(child)}",
                              SkippedFolderWarning, stacklevel=3)
                continue
            ancestors[child] = inside | {identity}
            kept.append(name)
        subdirs[:] = kept  # os.walk descends into these only
        dirs.extend(prefix + d for d in kept)
        files.extend(prefix + n for n in names)
    return files, dirs


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()  # follows links
    return stat.st_dev, stat.st_ino
