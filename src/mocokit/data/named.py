"""The torchvision datasets named by `data.path`: cifar10, cifar100, stl10.

Files are looked up in `data.root` in torchvision's own layout and are downloaded by torchvision only when
`data.download=true`. Reading does not go through torchvision's dataset classes (they re-hash every file on each
start), but through this module:
- CIFAR-10/100 "python version" batches are pickles by design (torchvision's standard format, read from the folder
  the user chose). They are read with a restricted unpickler that can only rebuild numpy arrays, lists, dicts,
  strings and numbers, so a tampered file cannot execute code.
- STL-10 binaries are raw uint8 arrays, memory-mapped (the 2.7 GB unlabelled split costs no RAM up front).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mocokit.data.errors import DataError

NAMED_DATASETS = ("cifar10", "cifar100", "stl10")


@dataclass(frozen=True)
class NamedSplit:
    """One split of a named dataset: uint8 pixels N x H x W x 3 (array-like), labels (-1: none), class names."""

    pixels: Any  # np.ndarray or _StlPixels: indexing gives one H x W x 3 uint8 array
    labels: list[int]
    classes: list[str]
    name: str  # e.g. "cifar10/train"


def named_splits(name: str) -> list[str]:
    """The splits `build_eval_dataset` / `build_pretrain_dataset` accept for a named dataset."""
    if name == "stl10":
        return ["train", "test", "unlabeled", "train+unlabeled"]
    return ["train", "test"]


def load_named(name: str, split: str, root: Path, download: bool) -> NamedSplit:
    """Read (after downloading when asked) one split of cifar10, cifar100 or stl10 from `root`."""
    if split not in named_splits(name):
        raise DataError(f"{name} has no split {split!r}; available: {', '.join(named_splits(name))}")
    if download:
        _download(name, root)
    if name == "stl10":
        return _load_stl10(split, root)
    return _load_cifar(name, split, root)


def _download(name: str, root: Path) -> None:
    # torchvision downloads, checks the MD5 and unpacks into its standard folder under root.
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        tvd.CIFAR10(str(root), train=True, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(str(root), train=True, download=True)
    else:
        tvd.STL10(str(root), split="train+unlabeled", download=True)


# ----------------------------------------------------------------------------------------------------- CIFAR


_CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            # bytes in protocol-2 pickles written by Python 3 (a pure str -> bytes function)
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return _NumpyOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError(
            f"{path} is not a CIFAR batch in torchvision's format ({error}); delete it and download again"
        ) from error


def _load_cifar(name: str, split: str, root: Path) -> NamedSplit:
    folder, train_files, test_files, meta_file = _CIFAR_FILES[name]
    base = root / folder
    files = train_files if split == "train" else test_files
    missing = [f for f in [*files, meta_file] if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"{name} not found: {base} lacks {', '.join(missing)}. Set data.download=true to download it with "
            f"torchvision, or set data.root to the folder that holds {folder}/."
        )
    label_key = "labels" if name == "cifar10" else "fine_labels"
    arrays, labels = [], []
    for file in files:
        batch = _read_cifar_pickle(base / file)
        arrays.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(label) for label in batch[label_key])
    meta = _read_cifar_pickle(base / meta_file)
    classes = list(meta["label_names" if name == "cifar10" else "fine_label_names"])
    pixels = np.ascontiguousarray(np.concatenate(arrays).transpose(0, 2, 3, 1))  # N x 32 x 32 x 3
    return NamedSplit(pixels, labels, classes, f"{name}/{split}")


# ---------------------------------------------------------------------------------------------------- STL-10


class _StlPixels:
    """STL-10's stored layout (N x 3 x W x H, column-major images) seen as N x H x W x 3, lazily per item."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._array = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)

    def __len__(self) -> int:
        return self._array.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # spawned workers map the file again instead of receiving a copy

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def __getitem__(self, index: int) -> np.ndarray:
        return np.ascontiguousarray(self._array[index].transpose(2, 1, 0))  # 3xWxH -> HxWx3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 96, 96, 3)


class _Concat:
    """Two pixel arrays seen as one (STL-10's train+unlabeled)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        n = len(self.first)
        return self.first[index] if index < n else self.second[index - n]


def _load_stl10(split: str, root: Path) -> NamedSplit:
    base = root / "stl10_binary"
    parts = split.split("+")
    needed = (
        [f"{p}_X.bin" for p in parts]
        + [f"{p}_y.bin" for p in parts if p != "unlabeled"]
        + ["class_names.txt"]
    )
    missing = [f for f in needed if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"stl10 not found: {base} lacks {', '.join(missing)}. Set data.download=true to download it with "
            "torchvision (2.6 GB), or set data.root to the folder that holds stl10_binary/."
        )
    classes = (base / "class_names.txt").read_text().split()
    pixels: Any = None
    labels: list[int] = []
    for part in parts:
        part_pixels = _StlPixels(base / f"{part}_X.bin")
        if part == "unlabeled":
            labels.extend([-1] * len(part_pixels))
        else:
            # Labels are stored 1-based.
            labels.extend(int(y) - 1 for y in np.fromfile(base / f"{part}_y.bin", dtype=np.uint8))
        pixels = part_pixels if pixels is None else _Concat(pixels, part_pixels)
    return NamedSplit(pixels, labels, classes, f"stl10/{split}")
