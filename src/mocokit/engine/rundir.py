"""The run folder: where it is, whether it may be written, which checkpoint a run resumes from."""

from __future__ import annotations

import time
from pathlib import Path

from mocokit.engine.checkpoint import LAST

CHECKPOINTS = "checkpoints"


def resolve_run_dir(run_dir: str, config_name: str) -> Path:
    """run.dir, or runs/<config name>-<timestamp> when it is empty."""
    if run_dir:
        return Path(run_dir)
    return Path("runs") / f"{config_name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def resume_checkpoint(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to continue from: `auto` -> run_dir's last one if any; `none` -> None (and a run folder that
    already holds checkpoints is refused rather than overwritten); otherwise a path that must exist."""
    last = checkpoint_dir(run_dir) / LAST
    if resume == "auto":
        return last if last.is_file() else None
    if resume == "none":
        if last.is_file():
            raise FileExistsError(
                f"{run_dir} already holds a run with checkpoints; continue it with resume=auto, or choose another "
                "run.dir (nothing was overwritten)"
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint file (use auto, none, or a checkpoint path)")
    return path
