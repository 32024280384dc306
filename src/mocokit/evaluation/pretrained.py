"""Load what a pretraining run produced: its config and its trained MoCo model (backbone, heads, key encoder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mocokit.config.loader import apply_overrides, build_dataclass
from mocokit.errors import ConfigError
from mocokit.models import MoCo, build_model
from mocokit.training.checkpoint import LAST, CheckpointError, PretrainCheckpoint, load_checkpoint
from mocokit.training.run_config import Config
from mocokit.training.rundir import checkpoint_dir, newest_intact_checkpoint


@dataclass
class Pretrained:
    config: Config  # the run's config, with the caller's overrides applied (e.g. another data.path)
    model: MoCo  # in eval mode, on the CPU
    checkpoint: Path  # the file the weights came from
    step: int  # the training step of those weights

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone


def read_run_checkpoint(run_or_checkpoint: str | Path,
                        say: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]]:
    """The checkpoint an evaluation reads, and its payload. A run folder: its newest intact checkpoint, as
    resume=auto finds it (last.pt, else previous.pt, else the epoch copies), saying which file is used when
    last.pt is damaged; a checkpoint file: that file. CheckpointError saying what is wrong and what to do."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        used, payload, skipped = newest_intact_checkpoint(path)
        if used is None and not skipped:
            raise CheckpointError(f"{path} has no {checkpoint_dir(path).name}/{LAST}: is it a mocokit run folder "
                                  "that finished at least one epoch?")
        if used is None:
            raise CheckpointError(f"{path} holds checkpoints but none can be used: " + " | ".join(skipped)
                                  + " Evaluate a copy of the run that is intact, or pretrain again.")
        if skipped:
            say(f"using {used}, the newest intact checkpoint of {path}; skipped " + " | ".join(skipped))
        return used, payload
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    try:
        return path, load_checkpoint(path)
    except CheckpointError as error:
        raise CheckpointError(f"{error} Evaluate another checkpoint of its run (previous.pt, epoch_NNNN.pt), or "
                              "give the run folder: its newest intact checkpoint is then used.") from None


def load_pretrained(run_or_checkpoint: str | Path, overrides: list[str] | None = None,
                    say: Callable[[str], None] = print) -> Pretrained:
    """The model of a run folder (its newest intact checkpoint: `read_run_checkpoint`) or checkpoint file, built
    from the config stored in the checkpoint.

    `overrides` (`section.key=value`) change the config for evaluation (data.path, data.num_workers, ...); overriding
    a `model.` key is refused, since the weights were trained for the stored model."""
    path, payload = read_run_checkpoint(run_or_checkpoint, say)
    saved = PretrainCheckpoint.from_payload(payload, path)
    overrides = list(overrides or [])
    model_keys = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
    if model_keys:
        raise ConfigError(f"{', '.join(model_keys)}: the model is fixed by the checkpoint {path}; remove these")
    config = build_dataclass(Config, apply_overrides(saved.config, overrides))
    model = build_model(config)
    model.load_state_dict(saved.model)
    return Pretrained(config, model.eval(), path, saved.step)
