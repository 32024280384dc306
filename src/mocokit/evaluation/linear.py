"""The linear probe: a new linear layer trained on a frozen backbone, then the official sanity check that no
backbone tensor changed.

Two modes (LinearConfig.mode): `full` is the official protocol (augmented images through the frozen backbone in eval
mode, every epoch); `fast` trains the same layer with the same recipe on cached features of un-augmented images,
which costs one backbone pass in total (and none on a repeat) — the CPU default. Without augmentation the layer
sees each image one way only, so fast usually reads a little lower on big backbones and is close on small ones."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from mocokit.evaluation.classifier import BackboneGuard, FrozenBackboneClassifier, linear_head
from mocokit.evaluation.optim import classifier_optimizer
from mocokit.evaluation.session import EvalSession
from mocokit.evaluation.supervised import evaluate, tensor_batches, train_epoch
from mocokit.training.optim import scaled_learning_rate
from mocokit.training.schedules import learning_rate_at

NAN_HINT = ("A large probe lr (30, the v1/v2 protocol) can overflow with features of a large scale (moco #90): use "
            "linear.feature_norm=batchnorm (features standardised by a BatchNorm without affine parameters before the "
            "linear layer, as MAE's probe) or a smaller linear.optim.lr.")


@dataclass
class LinearResult:
    top1: float
    top5: float
    mode: str  # fast or full (auto resolved)
    epochs: int
    lr: float  # peak lr after the scaling rule
    train_images: int
    test_images: int
    final_train_loss: float
    seconds: float


def resolve_mode(mode: str, device: torch.device) -> str:
    """auto -> fast on a CPU (no backbone pass per epoch), full on a GPU."""
    if mode == "auto":
        return "full" if device.type == "cuda" else "fast"
    return mode


def linear_probe(session: EvalSession) -> LinearResult:
    """Train and test a linear probe on `session.encoder`'s frozen backbone. Raises NonFiniteLoss (with what to do)
    when the loss becomes NaN/inf, and BackboneChanged when any backbone tensor differs from the loaded one after
    training."""
    started = time.perf_counter()
    cfg, seed, device = session.config.linear, session.config.eval.seed, session.device
    backbone = session.encoder.backbone
    mode = resolve_mode(cfg.mode, device)
    guard = BackboneGuard(backbone)
    test = session.test_split()
    train = session.train_split(augment=mode == "full")
    torch.manual_seed(seed)  # the head's initialisation
    head = linear_head(session.encoder.num_features, len(train.classes), cfg.init_std, cfg.feature_norm).to(device)
    peak_lr = scaled_learning_rate(cfg.optim, cfg.batch_size)
    optimizer = classifier_optimizer(head, cfg.optim, peak_lr)
    shuffle = torch.Generator().manual_seed(seed)

    if mode == "fast":
        train_x, train_y = session.features(train)  # N×D, N
        test_x, test_y = session.features(test)
        model: torch.nn.Module = head

        def train_batches() -> Iterable:
            return tensor_batches(train_x, train_y, cfg.batch_size, shuffle)

        def test_batches() -> Iterable:
            return tensor_batches(test_x, test_y, session.config.eval.batch_size)
    else:
        model = FrozenBackboneClassifier(backbone.to(device), head)
        train_loader = session.loader(train, cfg.batch_size, shuffle=True)

        def train_batches() -> Iterable:
            return train_loader

        def test_batches() -> Iterable:
            return session.loader(test, session.config.eval.batch_size)

    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    session.echo(f"linear probe ({mode}): {len(train)} training images, {len(test)} {test.name} images, "
                 f"{cfg.epochs} epochs, lr {peak_lr:g}, batch {cfg.batch_size}")
    stats = None
    for epoch in range(cfg.epochs):
        stats = train_epoch(model, train_batches(), optimizer,
                            lambda s: learning_rate_at(s, steps_per_epoch, cfg.epochs, peak_lr, cfg.optim),
                            epoch * steps_per_epoch, device, nonfinite_hint=NAN_HINT)
        if mode == "full" or (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:
            session.echo(f"  epoch {epoch + 1}/{cfg.epochs}: loss {stats.loss:.4f}, train top-1 {stats.accuracy:.4f}")
    top1, top5 = evaluate(model, test_batches(), device)
    guard.check(backbone)
    return LinearResult(top1, top5, mode, cfg.epochs, peak_lr, len(train), len(test),
                        stats.loss if stats else math.nan, time.perf_counter() - started)
