"""The run folder: where it is, whether it may be written, which checkpoint a run resumes from.

Checkpoints of a run, newest first: `checkpoints/last.pt`, `checkpoints/previous.pt` (the one `last.pt` replaced)
and the kept copies `checkpoints/epoch_NNNN.pt` (highest epoch first). `resume=auto` continues from the first of
them that reads back intact, and says which files it skipped and why.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mocokit.training.checkpoint import LAST, PREVIOUS, CheckpointError, load_checkpoint

CHECKPOINTS = "checkpoints"
# The checkpoint of the epoch that the label-free score (the embeddings' uniformity) ranks best so far, written by
# pretraining beside last.pt; `RUN@best` names it wherever a run is evaluated or exported. Never resumed from.
BEST = "best.pt"
BEST_SUFFIX = "@best"
_EPOCH_COPY = re.compile(r"epoch_(\d+)\.pt")


def resolve_run_dir(run_dir: str, config_name: str) -> Path:
    """run.dir, or runs/<config name>-<timestamp> when it is empty."""
    if run_dir:
        return Path(run_dir)
    return Path("runs") / f"{config_name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def epoch_copy_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def best_checkpoint(run: str | Path) -> Path | None:
    """For `RUN@best`, RUN's best.pt (CheckpointError when the run has none); None for any other argument."""
    text = str(run)
    if not text.endswith(BEST_SUFFIX):
        return None
    run_dir = Path(text[: -len(BEST_SUFFIX)])
    best = checkpoint_dir(run_dir) / BEST
    if not best.is_file():
        why = "is not a run folder" if not run_dir.is_dir() else \
            f"has no {CHECKPOINTS}/{BEST}: no epoch has ended with the label-free health measured " \
            "(monitor.health_images=0 turns it off)"
        raise CheckpointError(f"{run_dir} {why}; give the run folder alone to use its newest checkpoint")
    return best


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """The checkpoint files of a run folder that exist, newest first: last, previous, epoch copies by epoch."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    copies = sorted((p for p in folder.iterdir() if _EPOCH_COPY.fullmatch(p.name)),
                    key=lambda p: int(_EPOCH_COPY.fullmatch(p.name).group(1)), reverse=True)
    return [p for p in (folder / LAST, folder / PREVIOUS, *copies) if p.is_file()]


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """The first of `checkpoint_candidates(run_dir)` that reads back intact and its payload, with the messages of
    the damaged files skipped before it; (None, None, messages) when none is intact or there is none."""
    skipped: list[str] = []
    for path in checkpoint_candidates(run_dir):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as error:
            skipped.append(str(error))
    return None, None, skipped


def load_resume_checkpoint(run_dir: Path, resume: str,
                           say: Callable[[str], None] = print) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint a run continues from, and its payload:
    - `auto`: the newest intact checkpoint of run_dir (see `checkpoint_candidates`), or (None, None) when it has
      none. Damaged files are skipped with a message naming each; CheckpointError when every one is damaged.
    - `none`: (None, None); a run folder that already holds checkpoints is refused rather than overwritten.
    - a path: that file, which must exist and be intact (no fallback: the user chose it)."""
    if resume == "none":
        if checkpoint_candidates(run_dir):
            raise FileExistsError(
                f"{run_dir} already holds a run with checkpoints; continue it with resume=auto, or choose another "
                "run.dir (nothing was overwritten)"
            )
        return None, None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume={resume}: no such checkpoint file (use auto, none, or a checkpoint path)")
        try:
            return path, load_checkpoint(path)
        except CheckpointError as error:
            raise CheckpointError(f"{error} Resume from another checkpoint (resume=auto continues from the newest "
                                  "intact one of the run: last.pt, previous.pt, then the epoch copies).") from None
    path, payload, skipped = newest_intact_checkpoint(run_dir)
    if path is not None:
        if skipped:
            say(f"resume=auto: using {path}, the newest intact checkpoint; skipped {len(skipped)} damaged: "
                + " | ".join(skipped))
        return path, payload
    if skipped:
        raise CheckpointError(
            f"{run_dir} holds checkpoints but none can be used: " + " | ".join(skipped)
            + f" Move {checkpoint_dir(run_dir)} away to start this run afresh, or choose another run.dir."
        )
    return None, None
