"""mocokit: Momentum Contrast (MoCo v1, v2, v3) pretraining and evaluation.

    import mocokit
    cfg = mocokit.load_config("v2-cifar10", overrides=["model.queue_size=1024"])
    model = mocokit.build_model(cfg)
    out = model(view1, view2)  # train mode: one MoCo step; out["loss"].backward()
    encoder = mocokit.load_encoder("runs/demo")  # a run's backbone, eval mode; encoder.preprocess(pil_image)

`import mocokit` imports no heavy library: the names below are imported when first used (so `mocokit --help`
answers at once; the layers and this promise are checked in tests/test_layers.py).
"""

from __future__ import annotations

import importlib

from mocokit._version import __version__

# public name -> the module that defines it
_LAZY = {
    "Config": "mocokit.training.run_config",
    "load_config": "mocokit.training.run_config",
    "ConfigError": "mocokit.errors",
    "MoCo": "mocokit.models.moco",
    "build_model": "mocokit.models.build",
    "load_run": "mocokit.evaluation.pretrained",
    "load_encoder": "mocokit.evaluation.pretrained",
}

__all__ = ["Config", "ConfigError", "MoCo", "__version__", "build_model", "load_config", "load_encoder", "load_run"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mocokit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
