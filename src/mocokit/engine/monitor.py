"""The online kNN monitor: how well the current backbone's features classify a labelled split, during training."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mocokit.data.subset import seeded_subset
from mocokit.engine.config import MonitorConfig
from mocokit.evaluation.features import extract_features
from mocokit.evaluation.knn import knn_accuracy


class KnnMonitor:
    """Weighted kNN top-1/top-5 of a backbone: bank = training images, queries = test images, both through the
    evaluation transform (no augmentation)."""

    def __init__(self, bank: Dataset, queries: Dataset, num_classes: int, cfg: MonitorConfig, device: torch.device,
                 batch_size: int = 512, num_workers: int = 0, channels_last: bool = False, autocast=nullcontext,
                 seed: int = 0) -> None:
        self.cfg, self.device, self.num_classes = cfg, device, num_classes
        self.channels_last, self.autocast = channels_last, autocast
        loader = dict(batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                      generator=torch.Generator())  # loaders draw worker seeds; keep them off the global RNG
        self.bank_loader = DataLoader(seeded_subset(bank, cfg.knn_bank_size, seed), **loader)
        self.query_loader = DataLoader(seeded_subset(queries, cfg.knn_query_size, seed + 1), **loader)

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.bank_loader.dataset), len(self.query_loader.dataset)

    def evaluate(self, backbone: nn.Module) -> tuple[float, float]:
        extract = dict(device=self.device, channels_last=self.channels_last, autocast=self.autocast)
        bank, bank_labels = extract_features(backbone, self.bank_loader, **extract)
        queries, query_labels = extract_features(backbone, self.query_loader, **extract)
        return knn_accuracy(bank, bank_labels, queries, query_labels, self.num_classes, self.cfg.knn_k,
                            self.cfg.knn_temperature)
