"""The online kNN monitor: how well the current backbone's features classify a labelled split, during training."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocokit import data as mdata
from mocokit import distributed
from mocokit.data.config import DataConfig
from mocokit.data.errors import DataError
from mocokit.data.subset import seeded_subset
from mocokit.features import extract_features, pixel_features
from mocokit.knn import KnnScore, centred_knn_accuracy, knn_accuracy
from mocokit.training.config import MonitorConfig
from mocokit.training.faults import fault_point

HOW_TO_LABEL = ("for the kNN curve, set monitor.data.path=DIR to a labelled ImageFolder (DIR/<class>/<image>, or "
                "DIR/train/<class>/ and DIR/test/<class>/; a few dozen images per class)")
OWN_BANK_SHARE = 0.8  # a monitor folder without a test split: this share is the bank, the rest the queries


def own_labelled_splits(data: DataConfig, path: str, seed: int) -> tuple[Dataset, Dataset, int, str]:
    """(bank, queries, number of classes, what the queries are: "test images of DIR") of the monitor's own
    labelled ImageFolder `path` (monitor.data.path), read through the training data's evaluation transform
    (data.image_size, data.recipe): its train/ and test/ (or val/) splits, or one folder split 80/20 by a
    permutation seeded by `seed`. DataError when it has no class folders, fewer than two images, or train and test
    classes that differ."""
    cfg = replace(data, path=path, labels="folders", max_images=None, label_fraction=None, download=False)
    splits = mdata.available_splits(cfg)
    bank = mdata.build_eval_dataset(cfg, "train")
    classes = list(getattr(bank, "classes", None) or [])
    if not classes:
        raise DataError(f"monitor.data.path={path} has no class folders: put each class's images in DIR/<class>/")
    query_split = next((s for s in ("test", "val") if s in splits), None)
    if query_split is not None:
        queries = mdata.build_eval_dataset(cfg, query_split)
        if list(queries.classes) != classes:
            raise DataError(f"monitor.data.path={path}: train/ has the classes {classes} and {query_split}/ has "
                            f"{list(queries.classes)}; give both the same class folders")
        return bank, queries, len(classes), f"{query_split} images of {path}"
    if len(bank) < 2:
        raise DataError(f"monitor.data.path={path} has {len(bank)} image: label at least a few per class")
    order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = min(max(1, round(OWN_BANK_SHARE * len(bank))), len(bank) - 1)
    return (Subset(bank, order[:cut]), Subset(bank, order[cut:]), len(classes),
            f"held-out images (20%) of {path}")


class KnnMonitor:
    """Weighted kNN top-1/top-5 of a backbone: bank = training images, queries = test images, both through the
    evaluation transform (no augmentation). On several processes each extracts the features of its share of the
    images and all of them see the gathered whole, so every rank computes the same accuracy."""

    def __init__(self, bank: Dataset, queries: Dataset, num_classes: int, cfg: MonitorConfig, device: torch.device,
                 batch_size: int = 512, num_workers: int = 0, channels_last: bool = False, autocast=nullcontext,
                 seed: int = 0) -> None:
        self.cfg, self.device, self.num_classes = cfg, device, num_classes
        self.channels_last, self.autocast = channels_last, autocast
        loader = dict(batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                      generator=torch.Generator())  # loaders draw worker seeds; keep them off the global RNG
        bank = seeded_subset(bank, cfg.knn_bank_size, seed)
        queries = seeded_subset(queries, cfg.knn_query_size, seed + 1)
        self.sizes = len(bank), len(queries)
        self.bank_loader = DataLoader(rank_share(bank), **loader)
        self.query_loader = DataLoader(rank_share(queries), **loader)

    def evaluate(self, backbone: nn.Module) -> KnnScore:
        bank, bank_labels = self._features(backbone, self.bank_loader, self.sizes[0])
        fault_point("knn")  # crash tests only (MOCOKIT_FAULT); inert otherwise
        queries, query_labels = self._features(backbone, self.query_loader, self.sizes[1])
        return knn_accuracy(bank, bank_labels, queries, query_labels, self.num_classes, self.cfg.knn_k,
                            self.cfg.knn_temperature)

    def pixel_baseline(self) -> KnnScore:
        """The same kNN on the mean-centred raw pixels of the same images (no network): what features that cost
        nothing reach. Measured once, beside the random-initialisation baseline."""
        bank, bank_labels = (gather_shares(t, self.sizes[0]) for t in pixel_features(self.bank_loader, self.device))
        queries, query_labels = (gather_shares(t, self.sizes[1])
                                 for t in pixel_features(self.query_loader, self.device))
        return centred_knn_accuracy(bank, bank_labels, queries, query_labels, self.num_classes, self.cfg.knn_k,
                                    self.cfg.knn_temperature)

    def _features(self, backbone: nn.Module, loader: DataLoader, total: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of all `total` images, this rank having extracted its share."""
        features, labels = extract_features(backbone, loader, self.device, self.channels_last, self.autocast)
        return gather_shares(features, total), gather_shares(labels, total)

def rank_share(dataset: Dataset) -> Dataset:
    """This process's share of `dataset`: items rank, rank+P, rank+2P, ... (P processes), padded by wrapping around
    so that every rank has ceil(n/P) items (collectives need equal shapes). The whole dataset on one process."""
    world, rank = distributed.world_size(), distributed.rank()
    if world == 1:
        return dataset
    n = len(dataset)
    return Subset(dataset, [(rank + world * j) % n for j in range(math.ceil(n / world))])


def gather_shares(local: torch.Tensor, total: int) -> torch.Tensor:
    """Inverse of `rank_share` on per-item results: local M×... from every rank -> total×... in dataset order.
    The gathered rows are rank-major (rank r's item j at r·M + j) and item j of rank r is dataset item j·P + r."""
    world = distributed.world_size()
    if world == 1:
        return local
    gathered = distributed.all_gather_concat(local)  # (P·M)×...
    per_rank = gathered.shape[0] // world
    return gathered.view(world, per_rank, *local.shape[1:]).transpose(0, 1).reshape(-1, *local.shape[1:])[:total]
