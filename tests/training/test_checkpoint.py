"""Checkpoint files: round trip, checksum, refusals (truncated, corrupt, foreign, other version, code-running pickles),
atomic writes that fail cleanly (disk full, permission denied), the previous checkpoint kept."""

import argparse
import errno
import io
import os
import pickle
import random
import tempfile

import numpy as np
import pytest
import torch

from mocokit.training.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    capture_rng_state,
    keep_copy,
    load_checkpoint,
    payload_digest,
    restore_rng_state,
    save_checkpoint,
)


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_keeps_tensors_and_values(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", {"model": {"w": torch.arange(3)}, "step": 7})
    payload = load_checkpoint(path)
    assert payload["step"] == 7 and torch.equal(payload["model"]["w"], torch.arange(3))
    assert payload["format_version"] == FORMAT_VERSION and payload["checksum"].startswith("sha256:")
    assert files_in(path.parent) == ["last.pt"]  # no temporary file left behind
    # still an ordinary PyTorch file: anyone can read it with torch.load(weights_only=True)
    assert torch.load(path, weights_only=True)["step"] == 7


def test_a_module_state_dict_keeps_its_metadata(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    path = save_checkpoint(tmp_path / "last.pt", {"model": model.state_dict()})
    loaded = load_checkpoint(path)["model"]
    assert loaded._metadata == model.state_dict()._metadata  # module versions, which load_state_dict reads
    torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).load_state_dict(loaded)


def test_the_digest_changes_with_any_value_key_dtype_or_shape():
    base = {"model": {"w": torch.zeros(2, 3)}, "step": 1, "rng": (1, [2, 3], None)}
    variants = [
        {"model": {"w": torch.zeros(3, 2)}, "step": 1, "rng": (1, [2, 3], None)},  # shape
        {"model": {"w": torch.zeros(2, 3, dtype=torch.float64)}, "step": 1, "rng": (1, [2, 3], None)},  # dtype
        {"model": {"v": torch.zeros(2, 3)}, "step": 1, "rng": (1, [2, 3], None)},  # key
        {"model": {"w": torch.zeros(2, 3)}, "step": 2, "rng": (1, [2, 3], None)},  # value
        {"model": {"w": torch.zeros(2, 3)}, "step": 1.0, "rng": (1, [2, 3], None)},  # type
        {"model": {"w": torch.zeros(2, 3)}, "step": 1, "rng": (1, (2, 3), None)},  # container
    ]
    digests = {payload_digest(p) for p in [base, *variants]}
    assert len(digests) == 1 + len(variants)
    assert payload_digest(base) == payload_digest({**base, "checksum": "anything"})  # the checksum is left out


def test_a_flipped_bit_in_the_weights_is_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.full((256,), 3.0)}})
    data = bytearray(path.read_bytes())
    offset = data.find(np.full(256, 3.0, dtype=np.float32).tobytes())
    assert offset > 0
    data[offset + 100] ^= 0x01
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # PyTorch itself reads the damaged file without complaint
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupt.*checksum"):
        load_checkpoint(path)


def test_an_edited_value_is_caught_by_the_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 7})
    payload = torch.load(path, weights_only=True)
    payload["step"] = 8
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(path)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointWriteError, match="Input/output error"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert files_in(tmp_path) == ["last.pt"]


class FillsUp(io.RawIOBase):
    """A file on a disk that fills up after `room` bytes: what a real write(2) does when the disk is full."""

    def __init__(self, real, room: int) -> None:
        super().__init__()
        self.real, self.room = real, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.real.write(data)

    def fileno(self) -> int:
        return self.real.fileno()

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self.real.close()


def test_a_full_disk_is_a_clear_error_naming_the_file_and_the_cause(tmp_path, monkeypatch):
    """torch.save turns the write's OSError into "RuntimeError: unexpected pos"; the cause must survive."""
    folder = tmp_path / "checkpoints"
    first = save_checkpoint(folder / "last.pt", {"w": torch.ones(10)})
    save_checkpoint(folder / "last.pt", {"w": torch.ones(20)}, previous=folder / "previous.pt")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FillsUp(real_fdopen(fd, mode), room=600))
    with pytest.raises(CheckpointWriteError, match=f"cannot write checkpoint {first}.*disk is full") as error:
        save_checkpoint(folder / "last.pt", {"w": torch.ones(100_000)}, previous=folder / "previous.pt")
    monkeypatch.undo()
    assert error.value.errno == errno.ENOSPC
    assert files_in(folder) == ["last.pt", "previous.pt"]  # no partial file, nothing rotated
    assert load_checkpoint(folder / "last.pt")["w"].shape == (20,)
    assert load_checkpoint(folder / "previous.pt")["w"].shape == (10,)


def test_an_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    """Simulated (the tests may run as root, whom permissions do not stop); the real case runs when not root."""
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointWriteError, match="permission denied; make the folder writable"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and files_in(tmp_path) == ["last.pt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: covered by the simulated test")
def test_a_read_only_folder_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "run" / "last.pt", {"step": 1})
    path.parent.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError, match="Permission denied"):
            save_checkpoint(path, {"step": 2})
    finally:
        path.parent.chmod(0o700)
    assert load_checkpoint(path)["step"] == 1 and files_in(path.parent) == ["last.pt"]


def test_the_replaced_checkpoint_is_kept_as_previous_and_stale_temporaries_are_cleared(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save_checkpoint(folder / "last.pt", {"step": step}, previous=folder / "previous.pt")
    (folder / ".last.pt.abc123.tmp").write_bytes(b"left by a process killed mid-write")
    save_checkpoint(folder / "last.pt", {"step": 4}, previous=folder / "previous.pt")
    assert files_in(folder) == ["last.pt", "previous.pt"]
    assert load_checkpoint(folder / "last.pt")["step"] == 4 and load_checkpoint(folder / "previous.pt")["step"] == 3
    kept = keep_copy(folder / "last.pt", folder / "epoch_0004.pt")
    save_checkpoint(folder / "last.pt", {"step": 5}, previous=folder / "previous.pt")
    assert load_checkpoint(kept)["step"] == 4  # a kept copy does not follow the file it was copied from


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = os.path.join(tempfile.gettempdir(), "mocokit-pwned")


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path, writer):
    path = tmp_path / "evil.pt"
    payload = {"format": "mocokit-checkpoint", "format_version": FORMAT_VERSION, "payload": RunsCode()}
    if writer == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    else:
        torch.save(payload, path)  # a real PyTorch zip file whose pickle asks for os.system
    if os.path.exists(MARKER):
        os.remove(MARKER)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be used"):
        load_checkpoint(path)
    assert not os.path.exists(MARKER)


def test_truncated_empty_foreign_and_other_version_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.randn(1000)}})
    data = path.read_bytes()
    for cut in (0, 10, 500, len(data) // 2, len(data) - 1):
        truncated = tmp_path / f"truncated{cut}.pt"
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{truncated.name}.*(cannot be used|corrupt)"):
            load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not a mocokit checkpoint"):
        load_checkpoint(foreign)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="not a mocokit checkpoint"):
        load_checkpoint(tensor_only)
    for version in (1, 99):
        other = tmp_path / f"v{version}.pt"
        torch.save({"format": "mocokit-checkpoint", "format_version": version}, other)
        with pytest.raises(CheckpointError, match=f"v{version}.pt has format version {version}; this mocokit reads"):
            load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("content", ["garbage", "truncated", "object"])
def test_an_unusable_file_is_explained_in_mocokits_words_never_with_advice_to_load_unsafely(tmp_path, content):
    path = tmp_path / "last.pt"
    if content == "object":  # a pickled object other than tensors and plain values
        torch.save({"format": "mocokit-checkpoint", "model": argparse.Namespace(lr=0.1)}, path)
    else:
        data = save_checkpoint(path, {"model": {"w": torch.randn(1000)}}).read_bytes()
        path.write_bytes(b"not a checkpoint at all " * 40 if content == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"checkpoint {path} cannot be used: ") and message.endswith(".")
    assert "weights_only" not in message and "trust" not in message and "resume" not in message
    if content == "object":
        assert "argparse.Namespace" in message and "could run code" in message
    else:
        assert "not a complete checkpoint file" in message


def test_rng_states_survive_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
