"""The network a run starts from. One definition of "random initialisation", used by pretraining (its first step
and the kNN baseline it prints) and by the evaluations (`--random-init`, training from scratch in `transfer`), so
that every random-init number of a config is the number of the same weights."""

from __future__ import annotations

import torch

from mocokit.models import MoCo, build_model
from mocokit.training.run_config import Config


def initial_model(cfg: Config, dataset_size: int | None = None) -> MoCo:
    """The MoCo model of `cfg` with the weights a pretraining run of `cfg` starts from: drawn from PyTorch's global
    generator seeded with train.seed (reseeded here), so the same config gives the same weights in every command
    and process. dataset_size: as for `build_model` (the memory bank's rows; the backbone does not depend on it)."""
    torch.manual_seed(cfg.train.seed)
    return build_model(cfg, dataset_size=dataset_size)
