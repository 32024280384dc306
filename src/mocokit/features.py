"""Feature extraction: a backbone in eval mode over a loader of (image, label) batches."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader,
    device: torch.device,
    channels_last: bool = False,
    autocast=nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features N×D (float32, on `device`) and labels N of every batch of `loader`. The backbone runs in eval mode
    (BatchNorm uses its running statistics) and is put back in the mode it was in."""
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    try:
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                features.append(backbone(images).float())
            labels.append(torch.as_tensor(targets).to(device))
    finally:
        backbone.train(was_training)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def pixel_features(loader, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel "features" of every batch of `loader`: each image as it comes out of the loader's transform
    (for the evaluation transform: resized to data.image_size, normalised), flattened to one row. Returns N×(C·H·W)
    float32 and labels N on `device`. The baseline that costs no training: kNN on these rows, mean-centred
    (`knn.centred_knn_accuracy`). Memory is N·C·H·W floats (10,000 images at 32 px: 123 MB; at 96 px: 1.1 GB)."""
    features, labels = [], []
    for images, targets in loader:
        features.append(images.to(device, torch.float32).flatten(1))  # B×(C·H·W)
        labels.append(torch.as_tensor(targets).to(device))
    return torch.cat(features), torch.cat(labels)
