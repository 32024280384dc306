"""The `model:` section of a mocokit config: which MoCo, which backbone, which heads and loss settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Version = Literal["v1", "v2", "v3"]
TIMM_PREFIX = "timm:"
# Upper bounds far beyond any real model, so that a typo (an extra zero, a number where a name belongs) is a clear
# error here instead of an integer overflow or an allocation failure deep inside PyTorch.
MAX_LAYERS = 32  # projector / predictor depth
MAX_SIZE = 2**16  # dim, hidden_dim, image_size, patch_size, bn_splits
MAX_QUEUE = 2**24  # queue keys (the official ImageNet queue: 2**16)
MAX_WIDTH = 16.0  # ResNet channel multiplier (1: the standard widths)
# settings that shape only a mocokit ViT (its patch grid); a ResNet or timm backbone is the same network whatever they
# hold, so a checkpoint written when model.image_size still defaulted to 224 resumes a ResNet run at 32 px
VIT_GEOMETRY = ("image_size", "patch_size")


@dataclass
class ModelConfig:
    version: Version = "v2"  # v1: linear head; v2: MLP head; v3: projector + predictor, batch negatives
    # resnet18/34/50/101/152, wide_resnet50_2, vit_tiny/vit_small/vit_base/vit_large, or `timm:<name>` (any timm model)
    backbone: str = "resnet50"
    backbone_args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for timm backbones
    cifar_stem: bool = False  # ResNet: 3x3 stride-1 first conv and no max-pool, for 32-96 px images
    width: float = 1.0  # ResNet channel multiplier (0.25 -> 16-32-64-128 channels for ResNet-18)
    # resolved when a run's config is loaded, so config.yaml holds the side used; ResNets and timm models ignore it.
    # A ViT's must equal data.image_size (checked at load) unless backbone_args has dynamic_img_size: true
    image_size: int | None = None  # ViT: input side in pixels (patch grid, position embedding); null: data.image_size
    patch_size: int = 16  # ViT: patch side in pixels (4 for 32 px images)
    freeze_patch_embed: bool = False  # v3 ViT stability trick: keep the random patch projection frozen
    zero_init_residual: bool = False  # ResNet: zero-init the last BN gamma of each residual block (v3)

    dim: int = 128  # output feature dimension C of the head (v1/v2: 128, v3: 256)
    hidden_dim: int | None = None  # MLP hidden width; None: v2 uses the backbone's width, v3 uses 4096
    projector_layers: int | None = None  # v3: None -> 2 for ResNets, 3 for ViTs (v1: 1 linear layer, v2: 2)
    predictor_layers: int = 2  # v3 predictor (query side only)

    temperature: float = 0.2  # T in the softmax (v1 0.07, v2 0.2, v3 ResNet 1.0, v3 ViT 0.2)
    momentum: float = 0.999  # key-encoder EMA m (v3: the starting value m0 of the cosine schedule)
    momentum_schedule: Literal["constant", "cosine"] = "constant"  # v3: "cosine", rising from m0 to 1
    queue_size: int = 65536  # K, number of negative keys in the queue (v1/v2 only)
    # v1/v2 dictionary (MoCo paper, figure 2): "queue" (MoCo), "end_to_end" (negatives = the rest of the batch, keys
    # from the query encoder with gradients) or "memory_bank" (one stored feature per image, K drawn per step)
    dictionary: Literal["queue", "end_to_end", "memory_bank"] = "queue"
    # queue / memory bank: remove from each query's negatives the stored keys of its own image (older views of it; a
    # query meets one with probability about K/N). false: the papers' loss exactly (docs/false-negatives.md)
    mask_own_keys: bool = True
    # queue / memory bank: false-negative cancellation (Huynh et al. 2022): per query, the top_k negatives most similar
    # to its positive key are removed from the softmax ("eliminate") or counted as positives ("attract")
    false_negatives: Literal["none", "eliminate", "attract"] = "none"
    false_negative_top_k: int = 5
    false_negative_start_step: int = 0  # steps before the cancellation acts (a young encoder's similarities are noise)
    loss: Literal["infonce", "debiased"] = "infonce"  # debiased: Chuang et al. 2020, negatives corrected by tau_plus
    tau_plus: float = 0.1  # debiased loss: the prior probability that a negative shares the query's class
    symmetric: bool = False  # v1/v2: also swap the views and add the second loss term (as the CIFAR demo)
    shuffle_bn: bool = True  # v1/v2: shuffle BN against the batch-statistics shortcut
    # BatchNorm groups over the global batch (each group has its own batch statistics). On one device this is what
    # makes shuffle BN work: keys are shuffled across groups. With P processes each process uses bn_splits/P groups.
    bn_splits: int = 1
    # BatchNorm statistics over all processes (SyncBN) on multi-process runs: "all" BatchNorms, only the "heads"
    # (projector, predictor) or "none". auto: "all" for v3 (the official v3), "none" for v1/v2, whose backbone BN
    # must stay per process for shuffle BN to work (moco #46). One process is one BN group either way.
    sync_bn: Literal["auto", "none", "heads", "all"] = "auto"
    # pretraining starts from the weights in this file instead of a random initialisation: a mocokit run folder or
    # checkpoint (e.g. written by `mocokit import`), an official MoCo, torchvision or timm file, or a model zoo name
    # such as moco-v2-800ep-r50 (the official file, downloaded once; `mocokit import --list` lists them). See
    # docs/weights.md.
    # Encoders, heads and predictor come from it where it has them; the queue (memory bank) is filled with keys of the
    # training images by the loaded encoder before the first step (engine/dictionary_fill.py).
    init: str | None = None

    def __post_init__(self) -> None:
        self._check_backbone()
        if self.temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"model.momentum must be in [0, 1], got {self.momentum}")
        for name in ("dim", "predictor_layers", "bn_splits", "image_size", "patch_size"):
            if (getattr(self, name) or 1) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dim", "hidden_dim", "image_size", "patch_size", "bn_splits"):
            if (getattr(self, name) or 0) > MAX_SIZE:
                raise ValueError(f"model.{name} must be at most {MAX_SIZE}, got {getattr(self, name)}")
        if self.queue_size > MAX_QUEUE:
            raise ValueError(f"model.queue_size must be at most {MAX_QUEUE}, got {self.queue_size}")
        if not 0 < self.width <= MAX_WIDTH:
            raise ValueError(f"model.width must be in (0, {MAX_WIDTH}], got {self.width}")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError(f"model.hidden_dim must be >= 1 or null, got {self.hidden_dim}")
        if self.projector_layers is not None and not 1 <= self.projector_layers <= MAX_LAYERS:
            raise ValueError(f"model.projector_layers must be between 1 and {MAX_LAYERS} or null, got "
                             f"{self.projector_layers}")
        if self.predictor_layers > MAX_LAYERS:
            raise ValueError(f"model.predictor_layers must be between 1 and {MAX_LAYERS}, got {self.predictor_layers}")
        if self.uses_queue and self.queue_size < 1:
            raise ValueError(f"model.queue_size must be >= 1 for MoCo {self.version}, got {self.queue_size}")
        if self.dictionary != "queue" and not self.uses_queue:
            raise ValueError(f"model.dictionary={self.dictionary} is for MoCo v1/v2; v3 takes its negatives from the "
                             "batch (use model.dictionary=queue, the default)")
        if self.false_negative_top_k < 1:
            raise ValueError(f"model.false_negative_top_k must be >= 1, got {self.false_negative_top_k}")
        if self.false_negative_start_step < 0:
            raise ValueError(f"model.false_negative_start_step must be >= 0, got {self.false_negative_start_step}")
        if not 0.0 <= self.tau_plus < 1.0:
            raise ValueError(f"model.tau_plus must be in [0, 1), got {self.tau_plus}")
        if self.false_negatives != "none" and not (self.uses_queue and self.dictionary in ("queue", "memory_bank")):
            raise ValueError("model.false_negatives needs stored negatives: MoCo v1/v2 with model.dictionary=queue or "
                             "memory_bank (v3 and end_to_end take their negatives from the batch)")
        if self.false_negatives == "attract" and self.loss == "debiased":
            raise ValueError("model.loss=debiased takes one positive per query: use model.false_negatives=eliminate "
                             "or none with it")
        if self.uses_queue and self.shuffle_bn and self.sync_bn == "all":
            raise ValueError(
                "model.sync_bn=all with model.shuffle_bn on would share batch statistics across the processes that "
                "shuffle BN keeps apart (moco #46): use model.sync_bn=heads or none for MoCo v1/v2"
            )
        if self.is_vit and self.image_size is not None and self.image_size % self.patch_size:
            raise ValueError(
                f"model.image_size ({self.image_size}) must be a multiple of model.patch_size ({self.patch_size})"
            )

    def _check_backbone(self) -> None:
        """The backbone name, here rather than when the model is built (timm's names need timm, imported only for
        those). backbone_args, keyword arguments of timm's constructors, can only be checked by building."""
        from mocokit.models.backbones import backbone_family

        if backbone_family(self.backbone).name == "timm":  # (an unknown name: a ValueError naming the choices)
            import timm

            name = self.backbone[len(TIMM_PREFIX):]
            if not timm.is_model(name):
                raise ValueError(f"model.backbone={self.backbone}: timm has no model {name!r}; "
                                 f"`python -c \"import timm; print(timm.list_models('*resnet*'))\"` lists names")

    def with_image_size(self, data_image_size: int) -> ModelConfig:
        """This config with a null image_size resolved to the data's crop side; itself when image_size is set.
        ValueError for a ViT set to another side than the data's crops: its patch embedding accepts only its own side
        (timm asserts it at the first forward), unless backbone_args has dynamic_img_size (positions interpolated)."""
        if self.image_size is not None:
            if (self.is_vit and self.image_size != data_image_size
                    and not self.backbone_args.get("dynamic_img_size")):
                raise ValueError(
                    f"model.image_size ({self.image_size}) differs from data.image_size ({data_image_size}), the "
                    f"side of the crops the ViT is fed: set model.image_size=null to follow data.image_size, set both "
                    f"to one side, or pass model.backbone_args={{dynamic_img_size: true}} to interpolate the positions")
            return self
        if self.is_vit and data_image_size % self.patch_size:
            raise ValueError(f"data.image_size ({data_image_size}), the ViT's input side (model.image_size: null), "
                             f"must be a multiple of model.patch_size ({self.patch_size})")
        return dataclasses.replace(self, image_size=data_image_size)

    @property
    def sync_bn_scope(self) -> str:
        """sync_bn with auto resolved: "all", "heads" or "none"."""
        if self.sync_bn != "auto":
            return self.sync_bn
        return "none" if self.uses_queue else "all"

    @property
    def is_vit(self) -> bool:
        """Whether the backbone is one of MoCo v3's ViTs (a trait of its family in models/backbones.py)."""
        from mocokit.models.backbones import backbone_family

        return backbone_family(self.backbone).is_vit

    @property
    def uses_queue(self) -> bool:
        """v1/v2 take negatives from the queue; v3 from the other images of the batch."""
        return self.version in ("v1", "v2")
