"""The run's config: one typed section per concern (each owned by its package), loaded from a preset or YAML file
plus `key=value` overrides by the generic loader (`mocokit.config.loader`).

    cfg = load_config("v2-cifar10", overrides=["model.queue_size=1024", "train.epochs=5"])

Presets live in `mocokit/presets/*.yaml`; a YAML file may start from one with `base: <preset>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mocokit.config.loader import apply_overrides, build_dataclass, read_yaml_tree, to_tree
from mocokit.data.config import DataConfig
from mocokit.models.config import ModelConfig
from mocokit.training.auto import Derivation, resolve_auto
from mocokit.training.config import MonitorConfig, OptimConfig, RunConfig, TrainConfig


@dataclass
class Config:
    name: str = ""  # the preset or file this config came from (names the run folder)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    resume: str = "auto"  # auto: continue from run.dir's last checkpoint if there is one; none; or a checkpoint path
    # what `auto` values were resolved to and why (training/auto.py); not a key: config.yaml keeps it as comments
    derivation: Derivation | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.model = self.model.with_image_size(self.data.image_size)  # null: the ViT takes the data's crops
        if self.train.batch_size % max(self.model.bn_splits, 1):
            raise ValueError(
                f"train.batch_size={self.train.batch_size} must be a multiple of model.bn_splits="
                f"{self.model.bn_splits} (each BatchNorm group gets an equal share of the batch)"
            )


def load_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """A preset name or YAML path, then `section.key=value` overrides -> a validated Config.
    Raises ConfigError with a message naming the bad key or value."""
    tree = apply_overrides(read_yaml_tree(source), list(overrides or []))
    tree.setdefault("name", Path(str(source)).stem)
    tree, derivation = resolve_auto(tree, to_tree(Config()))  # `auto` values: derived from the data and machine
    config = build_dataclass(Config, tree)
    config.derivation = derivation
    return config


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML, with the reasons for its `auto` values as comments; `load_config` on it gives
    back an equal Config."""
    text = yaml.safe_dump(to_tree(config), sort_keys=False)
    if config.derivation is not None:
        text += "".join(f"# {line}\n" for line in config.derivation.lines())
    return text


__all__ = ["Config", "config_to_yaml", "load_config"]
