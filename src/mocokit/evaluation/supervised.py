"""Supervised training of a classifier, shared by the linear probe, fine-tuning and transfer: one epoch over
batches, evaluation, and a batch iterator over feature tensors. Loops with explicit arguments; the accuracy is a
pure function."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mocokit.errors import NonFiniteLoss


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """logits N×C, targets N -> for each k, how many rows have their target among the k largest logits
    (k is capped at C)."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # N×k
    hits = ranked == targets[:, None]  # N×k
    return [int(hits[:, : min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]


def tensor_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int,
                   generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) in batches of `batch_size` (the last one smaller); shuffled by `generator` when given.
    Slicing tensors directly: a DataLoader over a TensorDataset costs more than the linear layer itself."""
    order = torch.randperm(len(labels), generator=generator) if generator is not None else torch.arange(len(labels))
    for chunk in order.split(batch_size):
        yield features[chunk], labels[chunk]


@dataclass
class EpochStats:
    loss: float  # mean training loss
    accuracy: float  # training top-1
    steps: int


def train_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, lr_at: Callable[[int], float],
                first_step: int, device: torch.device, label_smoothing: float = 0.0,
                nonfinite_hint: str = "") -> EpochStats:
    """One epoch of cross-entropy training over (inputs, labels) batches. Before each step every param group gets
    lr_at(global step) × its `lr_scale` (1 when absent; layer-wise decay). Raises NonFiniteLoss, naming the step and
    its lr and adding `nonfinite_hint`, as soon as a loss is NaN or infinite, before that step updates anything."""
    model.train()
    loss_sum, correct, seen, steps = 0.0, 0, 0, 0
    for inputs, targets in batches:
        step = first_step + steps
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        inputs, targets = inputs.to(device, non_blocking=True), torch.as_tensor(targets).to(device)
        logits = model(inputs)  # N×classes
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"the classifier's loss became {loss.item()} at step {step + 1} (lr {lr:g}). "
                                + nonfinite_hint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        loss_sum += loss.item()
        correct += topk_correct(logits.detach(), targets, (1,))[0]
        seen += len(targets)
    return EpochStats(loss_sum / max(steps, 1), correct / max(seen, 1), steps)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device) -> tuple[float, float]:
    """(top-1, top-5) accuracy of `model` in eval mode over (inputs, labels) batches; the mode is restored."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = seen = 0
    try:
        for inputs, targets in batches:
            targets = torch.as_tensor(targets).to(device)
            top1, top5 = topk_correct(model(inputs.to(device)), targets)
            correct1, correct5, seen = correct1 + top1, correct5 + top5, seen + len(targets)
    finally:
        model.train(was_training)
    return correct1 / max(seen, 1), correct5 / max(seen, 1)
