"""Checkpoints: written atomically, verified by a checksum, read without executing code.

A checkpoint is a dict of tensors and plain values saved with `torch.save` and read with
`torch.load(weights_only=True)`, which unpickles only tensors and primitive containers: a file crafted to run code
is refused, never executed. The file stays an ordinary PyTorch checkpoint that `torch.load(weights_only=True)` reads
anywhere.

Integrity (format version 2). Next to the payload the file holds `checksum`: the SHA-256 of every key, value and
tensor byte of the payload, in order (`payload_digest`). `load_checkpoint` recomputes it, so a flipped bit in the
weights is an error naming the file, not a silently different model (PyTorch's zip reader does not check its CRCs).
The digest is taken over the content rather than over the serialized bytes so that it survives `torch.load` and
can be checked without keeping a second copy of the file in memory.

Writing. `save_checkpoint` writes a temporary file in the same folder, flushes and fsyncs it, and only then renames
it over the target (and fsyncs the folder): a kill at any moment leaves the old file or the new one, never a partial
one. With `previous=`, the file being replaced is first kept under that name (a hard link, or a copy where the file
system has none, renamed into place), so at every instant both names hold complete checkpoints: killed between the
two renames, `last` and `previous` are both the old checkpoint. A failed write (a full disk, a read-only or
unwritable folder) raises CheckpointWriteError naming the file and the cause, and leaves no temporary file.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import re
import shutil
import struct
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocokit.knn import KnnScore
from mocokit.training.faults import fault_point

FORMAT = "mocokit-checkpoint"
FORMAT_VERSION = 2  # 2: adds `checksum`; version 1 files (no checksum) are refused with a message
LAST = "last.pt"
PREVIOUS = "previous.pt"
_META_KEYS = ("format", "format_version", "checksum")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, folder not writable, ...). The file it would have replaced is
    intact and no temporary file is left. `errno` is the operating system's error number, when there is one."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


# ------------------------------------------------------------------------------------------------ writing


@dataclass
class PretrainCheckpoint:
    """What a pretraining checkpoint holds: everything a resume needs, and what evaluation reads (model, config,
    step). Written with `save_checkpoint(path, record.to_payload())`, read with
    `PretrainCheckpoint.from_payload(load_checkpoint(path), path)`."""

    model: dict[str, Any]  # the MoCo state dict (encoders, heads, dictionary)
    config: dict[str, Any]  # the resolved config as a tree (to_tree)
    step: int  # optimisation steps done
    epoch: int = 0  # epochs done
    steps_per_epoch: int = 0
    optimizer: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)  # the fp16 loss scaler's state, or empty
    rng: dict[str, Any] = field(default_factory=dict)  # capture_rng_state()
    baseline: KnnScore | None = None  # kNN at random initialisation
    knn: KnnScore | None = None  # the last kNN measured
    budget: dict[str, Any] | None = None  # the time budget's plan (training/budget.BudgetPlan.to_record()), if fixed
    seconds_spent: dict[str, float] = field(default_factory=dict)  # wall time per category so far (engine/budget.py)
    # the epoch the label-free score ranked best so far and its score ({"epoch", "uniformity"}), kept as best.pt
    best: dict[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("baseline", "knn"):  # plain lists in the file: weights_only loading reads no classes
            payload[name] = list(payload[name]) if payload[name] is not None else None
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path | str) -> PretrainCheckpoint:
        """The record of a loaded payload; CheckpointError naming what is missing when it is not a pretraining
        checkpoint of this version (keys added later take their defaults, so older checkpoints still load)."""
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in payload]
        if missing:
            raise CheckpointError(f"{path} is not a mocokit pretraining checkpoint (it has no {', '.join(missing)})")
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in payload.items() if name in known}
        for name in ("baseline", "knn"):
            if values.get(name) is not None:
                values[name] = KnnScore(*values[name])
        return cls(**values)


def save_checkpoint(path: Path, payload: dict[str, Any], previous: Path | None = None) -> Path:
    """Write `payload` (tensors on any device, plain values) to `path` atomically, with its format marker, version
    and checksum (keys of those names in `payload` are replaced). With `previous`, the file `path` held so far is
    kept under that name. Raises CheckpointWriteError when the file system refuses the write."""
    path = Path(path)
    folder = path.parent
    body = {key: value for key, value in payload.items() if key not in _META_KEYS}
    content = _to_cpu({"format": FORMAT, "format_version": FORMAT_VERSION, **body})
    content["checksum"] = payload_digest(content)
    tmp_name: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as raw:
            handle = _ErrorKeepingWriter(raw)
            try:
                torch.save(content, handle)
            except RuntimeError as error:  # torch reports a failed write as RuntimeError and drops the OSError
                if handle.error is None:
                    raise
                raise handle.error from error
            fault_point("checkpoint-write")
            raw.flush()
            os.fsync(raw.fileno())
        if previous is not None and path.is_file():
            _keep_copy(path, Path(previous))
        fault_point("checkpoint-rotate")
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_folder(folder)
    except OSError as error:
        raise CheckpointWriteError(_write_failure(path, error), error.errno) from error
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    _remove_stale_temporaries(folder, path.name)
    if previous is not None:
        _remove_stale_temporaries(Path(previous).parent, Path(previous).name)
    return path


def keep_copy(source: Path, target: Path) -> Path:
    """Atomically make `target` a copy of the checkpoint `source` (e.g. checkpoints/epoch_0010.pt): a kill leaves
    no partial `target`. Raises CheckpointWriteError like save_checkpoint."""
    try:
        _remove_stale_temporaries(Path(target).parent, Path(target).name)
        _keep_copy(Path(source), Path(target))
        _fsync_folder(Path(target).parent)
    except OSError as error:
        raise CheckpointWriteError(_write_failure(Path(target), error), error.errno) from error
    return Path(target)


class _ErrorKeepingWriter(io.RawIOBase):
    """A file wrapper that remembers the OSError of a failed write, which torch.save would replace by a
    RuntimeError without the cause ("unexpected pos ...")."""

    def __init__(self, raw) -> None:
        super().__init__()
        self.raw, self.error = raw, None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.raw.flush()


def _keep_copy(source: Path, target: Path) -> None:
    """`target` becomes the content of `source` in one rename; `source` is left as it is."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(source, tmp)  # same inode, no copying; the new file under `source` will be another inode
        except OSError:  # a file system without hard links: copy the bytes
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (a power cut after a return must not bring the old names back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows, where folders cannot be opened; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Temporary files of `name` left by a process killed mid-write. Only one process writes a run's checkpoints
    (the run lock), so none of these belongs to a live writer."""
    for stale in folder.glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _write_failure(path: Path, error: OSError) -> str:
    cause = {
        errno.ENOSPC: "the disk is full; free some space",
        errno.EDQUOT: "the disk quota is exhausted; free some space",
        errno.EACCES: "permission denied; make the folder writable or choose another run.dir",
        errno.EPERM: "operation not permitted; make the folder writable or choose another run.dir",
        errno.EROFS: "the file system is read-only; choose another run.dir",
    }.get(error.errno or -1, "check the folder and the disk")
    return (f"cannot write checkpoint {path} ({error.strerror or error}): {cause}. The previous checkpoint there, "
            "if any, is intact; continue the run with resume=auto once this is fixed.")


def _to_cpu(value: Any) -> Any:
    """The payload with every tensor on the CPU (detached), containers rebuilt, plain values as they are."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        rebuilt = type(value)((key, _to_cpu(item)) for key, item in value.items())
        if getattr(value, "__dict__", None):  # a state_dict's `_metadata` (module versions)
            rebuilt.__dict__.update(value.__dict__)
        return rebuilt
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return type(value)(_to_cpu(item) for item in value)
    return value


# ------------------------------------------------------------------------------------------------ checksum


def payload_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of `payload` without its `checksum` key, as "sha256:<hex>": every key and value in order, each
    tagged with its type and length (so that no two different payloads share an encoding), tensors by dtype, shape
    and raw bytes."""
    hasher = hashlib.sha256()
    _feed(hasher, {key: value for key, value in payload.items() if key != "checksum"})
    return f"sha256:{hasher.hexdigest()}"


def _feed(hasher, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensor = tensor.resolve_conj().resolve_neg().contiguous()
        header = f"{tensor.dtype}|{tuple(tensor.shape)}".encode()
        hasher.update(b"T" + struct.pack("<Q", len(header)) + header)
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())  # raw bytes (bf16 has no numpy dtype)
    elif isinstance(value, dict):
        hasher.update(b"D" + struct.pack("<Q", len(value)))
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update((b"L" if isinstance(value, list) else b"U") + struct.pack("<Q", len(value)))
        for item in value:
            _feed(hasher, item)
    elif value is None or isinstance(value, (bool, int, float, str, bytes)):
        text = value if isinstance(value, bytes) else repr(value).encode()
        tag = type(value).__name__.encode()
        hasher.update(b"V" + struct.pack("<QQ", len(tag), len(text)) + tag + text)
    else:  # what torch.load(weights_only=True) may also return: torch.dtype, torch.device, torch.Size, ...
        text = f"{type(value).__qualname__}:{value!r}".encode()
        hasher.update(b"O" + struct.pack("<Q", len(text)) + text)


# ------------------------------------------------------------------------------------------------ reading


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a mocokit checkpoint safely; CheckpointError, naming the file, for a missing, truncated, corrupt
    (checksum mismatch), foreign or other-version file, and for a pickle that asks to run code. The message says what
    is wrong with the file; what to do depends on the caller (resume, evaluate, export), which adds it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip/pickle errors, or a pickle that asks for code: all mean "not usable"
        raise CheckpointError(f"checkpoint {path} cannot be used: {_unreadable(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mocokit checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this mocokit reads version {FORMAT_VERSION}. "
            "Use the mocokit release that wrote it."
        )
    expected = payload.get("checksum")
    if not isinstance(expected, str) or payload_digest(payload) != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its content does not match its checksum (a damaged disk or an edited "
            "file)."
        )
    return payload


def _unreadable(error: Exception) -> str:
    """What a failed safe load means, in mocokit's words. torch's own text is not passed on: it is long, and it
    suggests loading with the safety off, which mocokit never does (a checkpoint holds tensors and plain values)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))  # the pickle names a class or function
    if found:
        return (f"it holds an object other than tensors and plain values ({found.group(1)}), which mocokit does not "
                "load, since loading it could run code from the file. mocokit never writes such objects: this file "
                "was written by another program or altered.")
    return ("it is not a complete checkpoint file (truncated, damaged, or another kind of file), so its content "
            "cannot be read.")


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
