"""Reading back a `--format moco` export: the whole MoCo model, rebuilt from the config stored in the file."""

from __future__ import annotations

from pathlib import Path

from mocokit.config.loader import build_dataclass
from mocokit.export.errors import ExportError
from mocokit.export.files import read_safetensors
from mocokit.models import MoCo, build_model
from mocokit.training.run_config import Config


def load_moco_safetensors(path: Path | str) -> tuple[MoCo, Config]:
    """The MoCo model (eval mode, CPU) and config of a `mocokit export --format moco` file; every tensor of the
    model, queue included, is loaded with strict=True."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("export_format") != "moco":
        raise ExportError(f"{path} is not a mocokit --format moco export (export_format: "
                          f"{metadata.get('export_format')!r})")
    config = build_dataclass(Config, metadata["config"])
    model = build_model(config)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), config
