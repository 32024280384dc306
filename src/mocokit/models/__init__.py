"""MoCo models: backbones, heads, queue, momentum encoder and the MoCo module itself."""

from mocokit.models.build import build_model
from mocokit.models.config import ModelConfig
from mocokit.models.moco import MoCo

__all__ = ["MoCo", "ModelConfig", "build_model"]
