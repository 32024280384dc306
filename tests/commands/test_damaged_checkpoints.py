"""Evaluation commands on a run whose last.pt is damaged: a run folder falls back to the newest intact checkpoint
(as resume=auto does) and names it; a damaged checkpoint file given directly is an error in mocokit's own words,
with advice for evaluation (not for resuming), never to turn safe loading off."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch


@pytest.fixture
def damaged_run(demo_run, tmp_path) -> Path:
    """A copy of the demo run whose checkpoints/last.pt is cut in half (previous.pt intact)."""
    run = tmp_path / "demo"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("eval", "cache"))
    last = run / "checkpoints" / "last.pt"
    assert (run / "checkpoints" / "previous.pt").is_file()
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return run


@pytest.mark.parametrize("command", [["knn"], ["linear", "--protocol", "linear-fast", "linear.epochs=1"]])
def test_evaluation_of_a_run_folder_falls_back_to_previous_and_names_it(damaged_run, mocokit_cli, capsys, command):
    assert mocokit_cli(command[0], damaged_run, *command[1:], "--json") == 0
    out = capsys.readouterr().out
    previous = damaged_run / "checkpoints" / "previous.pt"
    assert f"using {previous}" in out and "last.pt cannot be used" in out
    assert json.loads(out.strip().splitlines()[-1])["checkpoint"] == str(previous)


def test_export_of_a_run_folder_falls_back_to_previous_and_names_it(damaged_run, mocokit_cli, capsys, tmp_path):
    out_file = tmp_path / "encoder.safetensors"
    assert mocokit_cli("export", damaged_run, "--format", "torchvision", "--out", out_file, "--json") == 0
    out = capsys.readouterr().out
    previous = damaged_run / "checkpoints" / "previous.pt"
    assert f"using {previous}" in out and out_file.is_file()
    assert json.loads(out.strip().splitlines()[-1])["source_checkpoint"] == str(previous)


@pytest.mark.parametrize("content", ["truncated", "object"])
@pytest.mark.parametrize("command", [["knn"], ["export", "--format", "torchvision", "--out", "x.safetensors"]])
def test_a_damaged_checkpoint_file_gets_evaluation_advice_and_no_unsafe_advice(damaged_run, mocokit_cli, capsys,
                                                                                 content, command, monkeypatch):
    monkeypatch.chdir(damaged_run.parent)
    last = damaged_run / "checkpoints" / "last.pt"
    if content == "object":
        torch.save({"model": argparse.Namespace()}, last)
    assert mocokit_cli(command[0], last, *command[1:]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {last} cannot be used" in err and "Evaluate another checkpoint of its run" in err
    assert "weights_only" not in err and "resume" not in err.lower()
