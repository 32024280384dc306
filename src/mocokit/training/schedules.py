"""Learning-rate and momentum schedules: pure functions of the global step."""

from __future__ import annotations

import bisect
import math

from mocokit.models.config import ModelConfig
from mocokit.models.momentum import cosine_momentum
from mocokit.training.config import OptimConfig


def learning_rate_at(step: int, steps_per_epoch: int, epochs: int, peak_lr: float, cfg: OptimConfig) -> float:
    """lr for global step `step` (0-based, the step about to run): linear warm-up from 0 over cfg.warmup_epochs,
    then cosine to 0 at the end of training, ×gamma at each milestone (step), or constant."""
    epoch = step / steps_per_epoch  # fractional epoch
    if epoch < cfg.warmup_epochs:
        return peak_lr * epoch / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        progress = (epoch - cfg.warmup_epochs) / max(epochs - cfg.warmup_epochs, 1e-12)
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "step":
        return peak_lr * cfg.gamma ** bisect.bisect_right(sorted(cfg.milestones), epoch)
    return peak_lr


def momentum_at(step: int, total_steps: int, cfg: ModelConfig) -> float:
    """The key encoder's momentum for global step `step`: constant (v1/v2), or MoCo v3's half-cosine from m0 to 1."""
    if cfg.momentum_schedule == "constant":
        return cfg.momentum
    return cosine_momentum(step / total_steps, cfg.momentum)
