"""safetensors files: metadata round trip, no accidental overwrite, nothing partial left behind."""

from pathlib import Path

import pytest
import torch

from mocokit.export import read_safetensors, write_safetensors


def test_tensors_and_json_metadata_round_trip(tmp_path: Path):
    tensors = {"a": torch.randn(3, 2), "scalar": torch.tensor(5)}
    path = write_safetensors(tmp_path / "x.safetensors", tensors, {"step": 3, "recipe": {"k": [1, 2]}}, force=False)
    read, metadata = read_safetensors(path)
    assert read.keys() == tensors.keys() and all(torch.equal(read[k], tensors[k]) for k in tensors)
    assert metadata == {"step": 3, "recipe": {"k": [1, 2]}}


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--force"):
        write_safetensors(path, {"a": torch.zeros(1)}, {}, force=False)
    assert path.read_bytes() == b"precious"
    write_safetensors(path, {"a": torch.zeros(1)}, {}, force=True)
    assert read_safetensors(path)[0]["a"].shape == (1,)


def test_a_failed_write_leaves_no_file(tmp_path: Path):
    shared = torch.zeros(4)
    with pytest.raises(Exception, match="share memory"):  # safetensors refuses shared storage
        write_safetensors(tmp_path / "x.safetensors", {"a": shared, "b": shared}, {}, force=False)
    assert list(tmp_path.iterdir()) == []
