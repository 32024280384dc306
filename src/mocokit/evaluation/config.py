"""The evaluation config: typed sections for the kNN, linear-probe and fine-tuning commands, loaded from protocol
presets (`mocokit/presets/eval/*.yaml`) plus `section.key=value` overrides.

It is kept apart from the run's `Config` on purpose: the run config describes how an encoder was trained (and is
stored in its checkpoints), this one how it is evaluated. A command reads both from one list of overrides:
`split_overrides` sends `eval.*`, `knn.*`, `linear.*` and `finetune.*` here and everything else (`data.*`,
`train.device`, ...) to the run config, and refuses a key that belongs to neither.

    run_overrides, eval_overrides = split_overrides(["data.path=x.tar.gz", "linear.epochs=10"])
    eval_cfg = load_eval_config(["linear-v1v2"], eval_overrides)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mocokit.config.loader import PRESET_DIR, apply_overrides, build_dataclass, merge_trees, read_yaml_tree
from mocokit.errors import ConfigError
from mocokit.training.config import OptimConfig
from mocokit.training.run_config import Config

PROTOCOL_DIR = PRESET_DIR / "eval"


@dataclass
class EvalSettings:
    seed: int = 0  # seeds subsets (label fractions, test subsets), head initialisation, shuffling
    batch_size: int = 256  # batch of feature extraction and of test-set evaluation
    test_images: int | None = None  # evaluate on a seeded subset of at most this many test images (None: all)
    cache: bool = True  # cache extracted features next to the run (RUN/cache/); false: always extract

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.test_images is not None and self.test_images < 1:
            raise ValueError(f"eval.test_images must be >= 1 or null, got {self.test_images}")


@dataclass
class KnnConfig:
    k: int = 200  # neighbours (InstDisc / the official CIFAR demo; 20 is common at ImageNet scale)
    temperature: float = 0.1  # τ in the vote weights exp(similarity / τ)
    bank_images: int | None = None  # use a seeded subset of at most this many training images as the bank

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"knn.k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"knn.temperature must be > 0, got {self.temperature}")
        if self.bank_images is not None and self.bank_images < 1:
            raise ValueError(f"knn.bank_images must be >= 1 or null, got {self.bank_images}")


def _v1v2_linear_optim() -> OptimConfig:
    # MoCo v1/v2 main_lincls.py: SGD lr 30 (not scaled), momentum 0.9, wd 0, ×0.1 at epochs 60 and 80.
    return OptimConfig(name="sgd", lr=30.0, scale_lr=False, momentum=0.9, weight_decay=0.0, schedule="step",
                       milestones=[60.0, 80.0])


@dataclass
class LinearConfig:
    # fast: train on cached features of un-augmented images (minutes on a CPU); full: the official protocol, images
    # augmented (crop + flip) through the frozen backbone every epoch; auto: fast on a CPU, full on a GPU.
    mode: Literal["auto", "fast", "full"] = "auto"
    epochs: int = 100
    batch_size: int = 256  # global batch (the linear scaling rule of optim.scale_lr uses it)
    # none: the official probe, features straight into the linear layer. batchnorm: a BatchNorm without affine
    # parameters first (MAE's probe), which makes lr 30 safe whatever the scale of the features (moco #90).
    feature_norm: Literal["none", "batchnorm"] = "none"
    init_std: float = 0.01  # the new linear layer: weights N(0, init_std²), bias 0 (official: 0.01)
    optim: OptimConfig = field(default_factory=_v1v2_linear_optim)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"linear.{name} must be >= 1, got {getattr(self, name)}")
        if self.init_std < 0:
            raise ValueError(f"linear.init_std must be >= 0, got {self.init_std}")


def _finetune_optim() -> OptimConfig:
    return OptimConfig(name="sgd", lr=0.1, scale_lr=True, momentum=0.9, weight_decay=5e-4, schedule="cosine")


@dataclass
class FinetuneConfig:
    epochs: int = 30
    batch_size: int = 128  # global batch
    # Layer-wise lr decay (BEiT/MAE): ViT block i of L (0-based) trains at lr × decay^(L - i), the embeddings at
    # lr × decay^(L + 1), the new head at lr.
    # Needs a backbone that describes its layers (timm's `group_matcher`: ViTs and timm models); null: off.
    layer_decay: float | None = None
    label_smoothing: float = 0.0  # cross-entropy label smoothing (DeiT: 0.1)
    init_std: float = 0.01  # the new linear head: weights N(0, init_std²), bias 0
    eval_every_epochs: int = 1  # test accuracy every N epochs (the learning curve) and after the last
    optim: OptimConfig = field(default_factory=_finetune_optim)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune.{name} must be >= 1, got {getattr(self, name)}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"finetune.layer_decay must be in (0, 1] or null, got {self.layer_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"finetune.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class EvalConfig:
    eval: EvalSettings = field(default_factory=EvalSettings)  # shared by every evaluation command
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


EVAL_SECTIONS = tuple(f.name for f in dataclasses.fields(EvalConfig))
RUN_SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def protocol_names() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def protocol_path(protocol: str) -> str:
    """A protocol preset name (`linear-v1v2`) -> its file; a YAML path is returned as it is."""
    if protocol.endswith((".yaml", ".yml")) or "/" in protocol:
        return protocol
    path = PROTOCOL_DIR / f"{protocol}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(protocol, protocol_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown evaluation protocol {protocol!r}.{hint} Protocols: {', '.join(protocol_names())}"
                          " (or a YAML file with eval/knn/linear/finetune sections).")
    return str(path)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(run-config overrides, evaluation-config overrides), by the first part of each key. A key whose section is
    in neither config is a ConfigError that names it and the closest section."""
    run, evaluation = [], []
    for override in overrides:
        section = override.partition("=")[0].strip().split(".")[0]
        if section in EVAL_SECTIONS:
            evaluation.append(override)
        elif section in RUN_SECTIONS:
            run.append(override)
        else:
            known = sorted({*EVAL_SECTIONS, *RUN_SECTIONS})
            close = difflib.get_close_matches(section, known, n=2)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config section {section!r} in {override!r}.{hint} Evaluation sections: "
                              f"{', '.join(EVAL_SECTIONS)}; run sections: {', '.join(RUN_SECTIONS)}.")
    return run, evaluation


def load_eval_config(protocols: Sequence[str], overrides: Sequence[str] = ()) -> EvalConfig:
    """Defaults, then each protocol preset or YAML file in order, then `section.key=value` overrides -> a validated
    EvalConfig. Raises ConfigError naming a bad key or value."""
    tree: dict[str, Any] = {}
    for protocol in protocols:
        tree = merge_trees(tree, read_yaml_tree(Path(protocol_path(protocol))))
    return build_dataclass(EvalConfig, apply_overrides(tree, list(overrides)))


def default_linear_protocol(model_version: str, vit: bool, on_gpu: bool) -> str:
    """On a GPU, the official protocol of the run's MoCo version (v1/v2 -> linear-v1v2, v3 -> linear-v3-resnet or
    linear-v3-vit); on a CPU, linear-fast (cached features, standardised, a recipe that fits any feature scale)."""
    if not on_gpu:
        return "linear-fast"
    if model_version in ("v1", "v2"):
        return "linear-v1v2"
    return "linear-v3-vit" if vit else "linear-v3-resnet"


def default_finetune_protocol(vit: bool) -> str:
    return "finetune-vit" if vit else "finetune-resnet"
