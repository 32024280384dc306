"""The README's commands and Python snippets, run as written (issue 17: "every README command must run as written").

The `mocokit ...` lines are read from the README's ```bash blocks, not copied here, and run in order in an empty
folder through `mocokit.cli.main` (the `mocokit` script's entry point, checked below) on a tiny generated image folder.
What is substituted is what the README says a user substitutes: `data.path=` names the tiny folder, and sizes are
ordinary `key=value` overrides appended to a line (SIZES). Lines that cannot run on one machine without a GPU (make,
pip, torchrun, SLURM) are listed in SKIPPED with the reason; any other line fails the test until it is classified.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# first word of a README bash line that is not run -> why
SKIPPED = {
    "make": "builds .venv and runs the full demo/suite/benchmarks: minutes, and installs packages",
    "pip": "installs into the environment",
    "torchrun": "starts several processes (GPUs or nodes); the multi-process path has its own gloo tests",
    "srun": "SLURM, a cluster scheduler",
    ".venv/bin/python": "a benchmark (not a command of mocokit), timed, run on demand",
}
# sizes, appended to a command as the README's `key=value` overrides: the rest of each line is run as written
# (train.time_budget=null: a budgeted line runs one epoch here instead of its budget)
SIZES = {"pretrain": ["train.epochs=1", "train.batch_size=16", "train.time_budget=null"]}


def promised(argv: list[str]) -> list[str]:
    """The files (relative to the folder the commands run in) a README line promises; every command met is here."""
    command, options = argv[1], dict(zip(argv, argv[1:]))
    if command == "pretrain":  # its run.dir, else the demo preset's
        run = next((a.split("=", 1)[1] for a in argv if a.startswith("run.dir=")), "runs/demo")
        return [f"{run}/checkpoints/last.pt", f"{run}/config.yaml", f"{run}/report.html"]
    run = argv[2].removesuffix("@best")
    written = {"knn": [f"{run}/eval/knn.json"], "linear": [f"{run}/eval/linear-fast.json"],
               "transfer": [f"{run}/eval/transfer.json"], "export": [options.get("--out")],
               "embed": [options.get("--out"), options.get("--plot")]}
    assert command in written, f"a new README command {command!r}: say here what it writes"
    return [name for name in written[command] if name]


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def bash_commands() -> list[list[str]]:
    """Every command of the README's bash blocks as argv (continuation lines joined, comments dropped); a block that
    is a batch script (`#!/bin/bash`, SLURM) as its lines' commands, so that each is classified."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                continue  # a comment or #SBATCH directive
            if re.match(r"^\w+=", line):
                continue  # a shell variable of the SLURM script (head_node=...)
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def mocokit_commands() -> list[list[str]]:
    runnable = [argv for argv in bash_commands() if argv[0] == "mocokit"]
    unclassified = [argv for argv in bash_commands() if argv[0] != "mocokit" and argv[0] not in SKIPPED]
    assert not unclassified, f"README bash lines neither run nor skipped with a reason here: {unclassified}"
    return runnable


def substituted(argv: list[str], images: Path) -> list[str]:
    """The README's argv with data.path= naming `images` and the command's SIZES appended."""
    args = [f"data.path={images}" if a.startswith("data.path=") else a for a in argv[1:]]
    return [*args, *SIZES.get(args[0], [])]


def write_images(root: Path) -> Path:
    """root/{train,test}/class<c>/<n>.png: 10 classes (as CIFAR-10) of 8 train and 3 test noisy colour images."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(10, 3))
    for split, count in (("train", 8), ("test", 3)):
        for c, colour in enumerate(colours):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for n in range(count):
                pixels = np.clip(colour + rng.normal(0, 100, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


def run_cli(args: list[str], cwd: Path) -> tuple[int, str]:
    """`mocokit ARGS` in `cwd`: (exit status, stdout + stderr). argparse's own exits count as statuses."""
    from mocokit.cli import main

    output = io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                status = main(args)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.chdir(before)
    return status, output.getvalue()


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, str]]]:
    """An empty folder in which every README `mocokit` line has run in order: (folder, {line: (status, output)})."""
    folder = tmp_path_factory.mktemp("readme")
    images = write_images(tmp_path_factory.mktemp("images"))
    results = {}
    for argv in mocokit_commands():
        results[shlex.join(argv)] = run_cli(substituted(argv, images), folder)
    return folder, results


def test_the_mocokit_script_is_the_cli_main_these_tests_call():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["mocokit"] == "mocokit.cli:main"


def test_the_readme_commands_are_found_and_only_documented_means_are_substituted():
    commands = mocokit_commands()
    assert [argv[1] for argv in commands] == ["pretrain", "export", "pretrain", "knn", "linear", "transfer", "export",
                                              "embed"]
    assert all(promised(argv) for argv in commands)
    readme = README.read_text()
    assert "data.path=" in readme and "key=value" in readme  # the two means the substitution relies on
    pretrain = substituted(commands[2], Path("/tiny"))
    assert pretrain == ["pretrain", "demo", "data.path=/tiny", "train.epochs=1", "train.batch_size=16",
                        "train.time_budget=null"]
    assert substituted(commands[3], Path("/tiny")) == commands[3][1:]  # the others: exactly as written


def test_every_readme_command_runs_as_written_and_writes_what_it_promises(readme_folder):
    folder, results = readme_folder
    assert len(results) == len(mocokit_commands())
    for line, (status, output) in results.items():
        assert status == 0, f"`{line}` exited {status}:\n{output[-3000:]}"
        for name in promised(shlex.split(line)):
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, f"`{line}` did not write {name}"
    assert (folder / "runs/mine/checkpoints/best.pt").is_file()  # what `export runs/mine@best` read
    knn = (folder / "runs/demo/eval/knn.json").read_text()
    assert '"random_init_top1"' in knn and '"pixel_top1"' in knn  # --random-init and --pixel-baseline as written
    embedded = np.load(folder / "demo.npz")
    assert len(embedded["features"]) == 30  # --split test: the 10 x 3 test images


def test_a_broken_readme_command_fails_this_check(readme_folder, tmp_path):
    folder, _ = readme_folder
    export = next(argv for argv in mocokit_commands() if argv[1] == "export")
    renamed = ["--fmt" if a == "--format" else a for a in export[1:]]  # a renamed flag
    status, output = run_cli(renamed, folder)
    assert status == 2 and "error: the following arguments are required: --format" in output


def test_the_readme_python_snippets_run(readme_folder):
    folder, _ = readme_folder
    api, two_lines = readme_blocks("python")
    namespace: dict = {}
    exec(compile(api, "README.md (Python API)", "exec"), namespace)
    assert torch.isfinite(namespace["out"]["loss"]) and 0 <= namespace["out"]["accuracy"] <= 100
    features = namespace["encoder"](torch.randn(8, 3, 32, 32))  # 8: the preset's BatchNorm groups in train mode
    assert features.shape == (8, namespace["model"].backbone.num_features)
    # the second snippet on the run the README's commands made; `image` is the PIL image it says it takes
    namespace = {"mocokit": __import__("mocokit"), "image": Image.new("RGB", (40, 30), (200, 30, 90))}
    before = Path.cwd()
    os.chdir(folder)
    try:
        exec(compile(two_lines, "README.md (load_encoder)", "exec"), namespace)
    finally:
        os.chdir(before)
    assert namespace["features"].shape == (1, namespace["encoder"].num_features)
