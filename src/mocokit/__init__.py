"""mocokit: Momentum Contrast (MoCo v1, v2, v3) pretraining and evaluation.

    import mocokit
    cfg = mocokit.load_config("v2-cifar10", overrides=["model.queue_size=1024"])
    model = mocokit.build_model(cfg)
    out = model(view1, view2)  # train mode: one MoCo step; out["loss"].backward()
"""

from mocokit.config import Config, ConfigError, load_config
from mocokit.models import MoCo, build_model

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "MoCo", "__version__", "build_model", "load_config"]
