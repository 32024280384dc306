"""What an evaluation evaluates: the backbone of a pretraining run, or the same network at random initialisation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mocokit.evaluation.pretrained import load_pretrained
from mocokit.models import build_model
from mocokit.models.backbones import is_vit
from mocokit.training.initial import initial_model
from mocokit.training.run_config import Config
from mocokit.training.rundir import CHECKPOINTS


@dataclass
class Encoder:
    label: str  # "pretrained" or "random init": names it in messages, JSON keys and plots
    config: Config  # the run config with the caller's overrides (data.path, train.device, ...)
    backbone: nn.Module  # images N×3×H×W -> features N×num_features, on the CPU
    checkpoint: Path | None  # the weights' file; None at random initialisation
    step: int  # training step of the weights (0 at random initialisation)

    @property
    def is_vit(self) -> bool:
        return is_vit(self.config.model.backbone)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def trainable_backbone(self) -> nn.Module:
        """A copy of the backbone for supervised training: the same weights in the same network built with plain
        BatchNorm (model.bn_splits=1). BatchNorm groups are a pretraining device of shuffle BN; kept, they would
        make every fine-tuning batch a multiple of bn_splits. In eval mode both compute the same function."""
        model = dataclasses.replace(self.config.model, bn_splits=1, shuffle_bn=False)  # a backbone, no key encoder
        cfg = dataclasses.replace(self.config, model=model)
        backbone = build_model(cfg).backbone
        backbone.load_state_dict(self.backbone.state_dict())
        return backbone


def pretrained_encoder(run_or_checkpoint: str | Path, overrides: list[str],
                       say: Callable[[str], None] = print) -> Encoder:
    """The backbone of a run folder (its newest intact checkpoint) or of a checkpoint file."""
    loaded = load_pretrained(run_or_checkpoint, overrides, say)
    return Encoder("pretrained", loaded.config, loaded.backbone, loaded.checkpoint, loaded.step)


def random_encoder(cfg: Config) -> Encoder:
    """The backbone of `cfg` at random initialisation: the weights a pretraining run of `cfg` starts from
    (`initial_model`, seeded by train.seed), which pretraining's kNN baseline also measures."""
    return Encoder("random init", cfg, initial_model(cfg).eval().backbone, None, 0)


def run_folder(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (RUN for RUN/checkpoints/x.pt), else the checkpoint's own folder.
    Evaluation outputs (RUN/eval/) and the feature cache (RUN/cache/) live there."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent
