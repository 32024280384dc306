import os
import pickle
import random

import numpy as np
import pytest
import torch

from mocokit.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_round_trip_keeps_tensors_and_values(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", {"model": {"w": torch.arange(3)}, "step": 7})
    payload = load_checkpoint(path)
    assert payload["step"] == 7 and torch.equal(payload["model"]["w"], torch.arange(3))
    assert payload["format_version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mocokit-pwned",))


def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": "mocokit-checkpoint", "payload": RunsCode()}, handle)
    marker = "/tmp/mocokit-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(path)
    assert not os.path.exists(marker)


def test_truncated_foreign_and_newer_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model": {"w": torch.randn(1000)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a mocokit checkpoint"):
        load_checkpoint(foreign)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "mocokit-checkpoint", "format_version": 99}, newer)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(newer)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_states_survive_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "rng.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
