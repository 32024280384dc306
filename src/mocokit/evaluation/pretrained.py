"""Load what a pretraining run produced: its config and its trained MoCo model (backbone, heads, key encoder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mocokit.config.loader import apply_overrides, build_dataclass
from mocokit.errors import ConfigError
from mocokit.models import MoCo, build_model
from mocokit.training.checkpoint import LAST, CheckpointError, PretrainCheckpoint, load_checkpoint
from mocokit.training.run_config import Config
from mocokit.training.rundir import checkpoint_dir


@dataclass
class Pretrained:
    config: Config  # the run's config, with the caller's overrides applied (e.g. another data.path)
    model: MoCo  # in eval mode, on the CPU
    checkpoint: Path  # the file the weights came from
    step: int  # the training step of those weights

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone


def resolve_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """A run folder -> its checkpoints/last.pt; a checkpoint file -> itself."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        last = checkpoint_dir(path) / LAST
        if not last.is_file():
            raise CheckpointError(f"{path} has no {checkpoint_dir(path).name}/{LAST}: is it a mocokit run folder "
                                  "that finished at least one epoch?")
        return last
    if not path.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    return path


def load_pretrained(run_or_checkpoint: str | Path, overrides: list[str] | None = None) -> Pretrained:
    """The model of a run folder or checkpoint file, built from the config stored in the checkpoint.

    `overrides` (`section.key=value`) change the config for evaluation (data.path, data.num_workers, ...); overriding
    a `model.` key is refused, since the weights were trained for the stored model."""
    path = resolve_checkpoint(run_or_checkpoint)
    saved = PretrainCheckpoint.from_payload(load_checkpoint(path), path)
    overrides = list(overrides or [])
    model_keys = [o.split("=", 1)[0] for o in overrides if o.startswith("model.")]
    if model_keys:
        raise ConfigError(f"{', '.join(model_keys)}: the model is fixed by the checkpoint {path}; remove these")
    config = build_dataclass(Config, apply_overrides(saved.config, overrides))
    model = build_model(config)
    model.load_state_dict(saved.model)
    return Pretrained(config, model.eval(), path, saved.step)
