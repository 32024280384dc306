from pathlib import Path

import pytest
import torch

from mocokit.export import export_model, read_safetensors
from mocokit.models import build_model
from mocokit.training.run_config import load_config


def trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm non-default statistics and affine values, so eval-mode outputs depend on all of them."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
    return model


@pytest.fixture
def exported(tmp_path: Path):
    """exported(fmt, overrides...) -> (MoCo model in eval mode, config, tensors, metadata) of a fresh export."""

    def export(fmt: str, *overrides: str):
        cfg = load_config("v2-cifar10", ["model.bn_splits=1", "model.shuffle_bn=false", "model.queue_size=64",
                                         *overrides])
        model = trained_looking(build_model(cfg)).eval()
        result = export_model(model, cfg, fmt, tmp_path / f"{fmt}.safetensors", source="ckpt.pt", step=7)
        return (model, cfg, *read_safetensors(result.path))

    return export


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two threads contend and these small models run much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
