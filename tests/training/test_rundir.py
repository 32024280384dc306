"""Which checkpoint a run resumes from: resume=auto falls back past damaged files and says so; none and paths."""

import pytest
import torch

from mocokit.training.checkpoint import CheckpointError, keep_copy, save_checkpoint
from mocokit.training.rundir import checkpoint_candidates, checkpoint_dir, load_resume_checkpoint


def run_with_checkpoints(run_dir, steps, keep_epochs=()):
    """A run folder whose last.pt holds the last of `steps` (previous.pt the one before), plus kept epoch copies."""
    folder = checkpoint_dir(run_dir)
    for step in steps:
        save_checkpoint(folder / "last.pt", {"step": step, "w": torch.full((64,), float(step))},
                        previous=folder / "previous.pt")
        if step in keep_epochs:
            keep_copy(folder / "last.pt", folder / f"epoch_{step:04d}.pt")
    return folder


def damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bitflip":  # inside the tensor data: only the checksum notices
        offset = data.find(torch.load(path, weights_only=True)["w"].numpy().tobytes()) + 10
        assert offset > 10
        path.write_bytes(data[:offset] + bytes([data[offset] ^ 0x10]) + data[offset + 1:])
    elif how == "foreign":
        torch.save({"state_dict": {}}, path)


def test_auto_resumes_from_last_when_it_is_intact(tmp_path):
    run_with_checkpoints(tmp_path, [1, 2])
    messages = []
    path, payload = load_resume_checkpoint(tmp_path, "auto", messages.append)
    assert path.name == "last.pt" and payload["step"] == 2 and messages == []


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip", "foreign"])
def test_auto_falls_back_to_previous_when_last_is_damaged_and_says_why(tmp_path, how):
    folder = run_with_checkpoints(tmp_path, [1, 2])
    damage(folder / "last.pt", how)
    messages = []
    path, payload = load_resume_checkpoint(tmp_path, "auto", messages.append)
    assert path == folder / "previous.pt" and payload["step"] == 1
    assert len(messages) == 1 and str(folder / "previous.pt") in messages[0] and str(folder / "last.pt") in messages[0]


def test_auto_then_tries_kept_epoch_copies_newest_first(tmp_path):
    folder = run_with_checkpoints(tmp_path, [1, 2, 3, 4], keep_epochs=(1, 2))
    assert [p.name for p in checkpoint_candidates(tmp_path)] == ["last.pt", "previous.pt", "epoch_0002.pt",
                                                                 "epoch_0001.pt"]
    damage(folder / "last.pt", "truncated")
    damage(folder / "previous.pt", "empty")
    path, payload = load_resume_checkpoint(tmp_path, "auto", lambda _m: None)
    assert path.name == "epoch_0002.pt" and payload["step"] == 2


def test_auto_refuses_when_every_checkpoint_is_damaged_naming_each(tmp_path):
    folder = run_with_checkpoints(tmp_path, [1, 2])
    damage(folder / "last.pt", "truncated")
    damage(folder / "previous.pt", "foreign")
    with pytest.raises(CheckpointError, match="none can be used.*last.pt.*previous.pt.*Move"):
        load_resume_checkpoint(tmp_path, "auto", lambda _m: None)


def test_auto_starts_afresh_in_an_empty_or_missing_folder(tmp_path):
    assert load_resume_checkpoint(tmp_path / "missing", "auto") == (None, None)
    checkpoint_dir(tmp_path).mkdir()
    assert load_resume_checkpoint(tmp_path, "auto") == (None, None)


def test_none_refuses_a_folder_with_any_checkpoint_and_a_path_must_exist(tmp_path):
    folder = run_with_checkpoints(tmp_path, [1, 2])
    (folder / "last.pt").unlink()  # e.g. deleted by hand: previous.pt still holds the run
    with pytest.raises(FileExistsError, match="resume=auto"):
        load_resume_checkpoint(tmp_path, "none")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_resume_checkpoint(tmp_path, str(tmp_path / "nope.pt"))
    path, payload = load_resume_checkpoint(tmp_path, str(folder / "previous.pt"))
    assert payload["step"] == 1
    damage(folder / "previous.pt", "truncated")
    with pytest.raises(CheckpointError, match="previous.pt"):  # a chosen file has no fallback
        load_resume_checkpoint(tmp_path, str(folder / "previous.pt"))


def test_a_damaged_resume_path_says_to_resume_from_another_checkpoint(tmp_path):
    folder = run_with_checkpoints(tmp_path / "run", [1, 2])
    damage(folder / "last.pt", "truncated")
    with pytest.raises(CheckpointError) as caught:
        load_resume_checkpoint(tmp_path / "run", str(folder / "last.pt"))
    message = str(caught.value)
    assert "not a complete checkpoint file" in message and "Resume from another checkpoint" in message
    assert "weights_only" not in message
