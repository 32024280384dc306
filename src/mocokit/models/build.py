"""`build_model(cfg)`: a MoCo model from the `model:` section of a config."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

from mocokit import distributed
from mocokit.models.backbones import backbone_family, build_backbone, has_batch_statistics
from mocokit.models.config import ModelConfig
from mocokit.models.dictionaries import BatchNegatives, Dictionary, EndToEnd
from mocokit.models.false_negatives import FalseNegativeCancellation
from mocokit.models.heads import v1_head, v2_head, v3_predictor, v3_projector
from mocokit.models.memory_bank import MemoryBank
from mocokit.models.moco import MoCo
from mocokit.models.queue import Queue
from mocokit.models.shuffle_bn import split_batch_norms
from mocokit.models.sync_bn import sync_batch_norms

V3_HIDDEN_DIM = 4096


def _cancellation(cfg: ModelConfig) -> FalseNegativeCancellation | None:
    if cfg.false_negatives == "none":
        return None
    return FalseNegativeCancellation(cfg.false_negatives, cfg.false_negative_top_k, cfg.false_negative_start_step)


def _queue(cfg: ModelConfig, dataset_size: int | None) -> Dictionary:
    return Queue(cfg.queue_size, cfg.dim, mask_own_keys=cfg.mask_own_keys, cancellation=_cancellation(cfg))


def _memory_bank(cfg: ModelConfig, dataset_size: int | None) -> Dictionary:
    if dataset_size is None:
        raise ValueError("model.dictionary=memory_bank needs the dataset size: build_model(cfg, dataset_size=N)")
    return MemoryBank(dataset_size, cfg.dim, negatives=cfg.queue_size, mask_own_keys=cfg.mask_own_keys,
                      cancellation=_cancellation(cfg))


# model.dictionary (v1/v2) -> its builder; MoCo v3 always takes its negatives from the batch (BatchNegatives)
DICTIONARIES: dict[str, Callable[[ModelConfig, int | None], Dictionary]] = {
    "queue": _queue,
    "end_to_end": lambda cfg, dataset_size: EndToEnd(),
    "memory_bank": _memory_bank,
}


def build_model(cfg, dataset_size: int | None = None) -> MoCo:
    """cfg: a full config (its `.model` is used) or a `ModelConfig`. Call after torch.distributed is initialised,
    if it is used: the number of BatchNorm groups per process depends on the world size. dataset_size: the number
    of training images, needed by model.dictionary=memory_bank (one stored feature per image)."""
    model_cfg: ModelConfig = getattr(cfg, "model", cfg)
    backbone = build_backbone(model_cfg)
    _split_bn_groups(backbone, model_cfg)
    width = backbone.num_features
    if model_cfg.version == "v1":
        head, predictor = v1_head(width, model_cfg.dim), None
    elif model_cfg.version == "v2":
        head, predictor = v2_head(width, model_cfg.dim, model_cfg.hidden_dim), None
    else:
        vit = backbone_family(model_cfg.backbone).is_vit
        hidden = model_cfg.hidden_dim or V3_HIDDEN_DIM
        layers = model_cfg.projector_layers or (3 if vit else 2)
        head = v3_projector(width, hidden, model_cfg.dim, layers)
        predictor = v3_predictor(model_cfg.dim, hidden, model_cfg.predictor_layers, last_bn=vit)
    if model_cfg.uses_queue:
        dictionary = DICTIONARIES[model_cfg.dictionary](model_cfg, dataset_size)
    else:
        dictionary = BatchNegatives()
    model = MoCo(backbone, head, predictor, dictionary, temperature=model_cfg.temperature,
                 momentum=model_cfg.momentum,
                 symmetric=model_cfg.symmetric or not model_cfg.uses_queue,  # v3's loss is always symmetric
                 shuffle_bn=model_cfg.shuffle_bn and model_cfg.uses_queue, loss=model_cfg.loss,
                 loss_settings={"tau_plus": model_cfg.tau_plus})
    _sync_bn_across_processes(model, model_cfg)
    return model


def _sync_bn_across_processes(model: MoCo, cfg: ModelConfig) -> None:
    """SyncBN where the config asks for it, on multi-process runs (one process already normalises over its whole
    batch, so the model stays plain there and its state dict is the same either way)."""
    scope = cfg.sync_bn_scope
    if distributed.world_size() == 1 or scope == "none":
        return
    encoders = [e for e in (model.encoder, model.momentum_encoder) if e is not None]
    parts = encoders if scope == "all" else [e.head for e in encoders]
    native = distributed.collective_device().type == "cuda"  # NCCL: torch's fused GPU kernels
    for part in [*parts, model.predictor]:
        if part is not None:
            sync_batch_norms(part, native)


def _split_bn_groups(backbone: nn.Module, cfg: ModelConfig) -> None:
    """Give each process bn_splits / world_size BatchNorm groups, so a config means the same BN group size on any
    number of processes (each process is one group of the global batch)."""
    processes = distributed.world_size()
    if cfg.bn_splits % processes and cfg.bn_splits != 1:
        raise ValueError(
            f"model.bn_splits={cfg.bn_splits} BatchNorm groups cannot be spread over {processes} processes: "
            f"use a multiple of {processes}, or 1 (one group per process)"
        )
    per_process = max(1, cfg.bn_splits // processes)
    split_batch_norms(backbone, per_process)
    if (cfg.uses_queue and cfg.shuffle_bn and has_batch_statistics(backbone) and processes == 1
            and per_process == 1):
        warnings.warn(
            "model.shuffle_bn is on but there is one process and model.bn_splits=1: every key shares one set of "
            "BatchNorm statistics, so shuffling changes nothing and the encoder can cheat through BN. "
            "Set model.bn_splits to 4 or 8 (the official CIFAR recipe uses 8).",
            stacklevel=2,
        )
