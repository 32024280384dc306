"""State dicts as safetensors wants them, and the check that one loads into a target model."""

from __future__ import annotations

import torch
from torch import nn

from mocokit.export.errors import ExportError


def standalone_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` as CPU tensors that are contiguous and each own their storage (safetensors refuses
    shared or strided ones); the module is left untouched."""
    return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in module.state_dict().items()}


def check_loadable(tensors: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Raise ExportError unless `target.load_state_dict(tensors, strict=True)` would succeed: same names, same
    shapes. `target` may live on the meta device (nothing is copied)."""
    expected = {name: tuple(t.shape) for name, t in target.state_dict().items()}
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    wrong = sorted(n for n in expected.keys() & tensors.keys() if tuple(tensors[n].shape) != expected[n])
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if names]
        raise ExportError(f"the weights would not load into {type(target).__name__} ({'; '.join(parts)}); "
                          "please report this with the run's config.yaml")
