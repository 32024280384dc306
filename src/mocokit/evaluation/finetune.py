"""End-to-end fine-tuning: the backbone and a new linear head train together on labelled images, with a test
accuracy every `eval_every_epochs` (the learning curve that `transfer` compares)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from mocokit.evaluation.classifier import linear_head
from mocokit.evaluation.datasets import test_split, train_split
from mocokit.evaluation.encoders import Encoder
from mocokit.evaluation.optim import classifier_optimizer
from mocokit.evaluation.session import EvalSession
from mocokit.evaluation.supervised import evaluate, train_epoch
from mocokit.training.optim import scaled_learning_rate
from mocokit.training.schedules import learning_rate_at


@dataclass
class Curve:
    epochs: list[int] = field(default_factory=list)  # epochs after which the test set was measured
    test_top1: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # mean training loss of each measured epoch
    train_top1: list[float] = field(default_factory=list)  # training top-1 of each measured epoch (augmented)

    def oscillation(self) -> float | None:
        """How much the test curve oscillates: the mean absolute change of test top-1 from one measurement to the
        next (a fraction; 0.02 = 2 points per step). None with fewer than two measurements. Measured every epoch
        (finetune.eval_every_epochs=1), it is the mean absolute epoch-to-epoch change."""
        return oscillation(self.test_top1)


def oscillation(values: list[float]) -> float | None:
    """mean_i |values[i+1] - values[i]|; None for fewer than two values."""
    if len(values) < 2:
        return None
    return sum(abs(b - a) for a, b in zip(values, values[1:])) / (len(values) - 1)


@dataclass
class FinetuneResult:
    label: str  # the encoder's: "pretrained" or "random init"
    top1: float
    top5: float
    curve: Curve
    epochs: int
    lr: float  # peak lr after the scaling rule
    train_images: int
    test_images: int
    seconds: float
    backbone: nn.Module  # the fine-tuned backbone (a copy: the encoder's own is left as loaded)

    def record(self) -> dict:
        """The JSON-able part: accuracies, learning curve and settings (not the weights)."""
        return {name: getattr(self, name) for name in ("label", "top1", "top5", "epochs", "lr", "train_images",
                                                       "test_images", "seconds")} | {"curve": asdict(self.curve)}


def finetune(session: EvalSession, encoder: Encoder | None = None) -> FinetuneResult:
    """Fine-tune a copy of `encoder`'s backbone (default: the session's) with a new head on the labelled training
    split (data.label_fraction / data.max_images apply) and test it. With the same eval.seed two encoders get the
    same head initialisation and the same order of batches."""
    started = time.perf_counter()
    encoder = encoder or session.encoder
    cfg, seed, device = session.config.finetune, session.config.eval.seed, session.device
    data = encoder.config.data
    train = train_split(data, seed, augment=True, open_split=session.open_split)
    test = test_split(data, seed, session.config.eval.test_images, session.open_split)
    backbone = encoder.trainable_backbone().to(device)
    torch.manual_seed(seed)  # head initialisation and the augmentations of in-process loading
    head = linear_head(encoder.num_features, len(train.classes), cfg.init_std).to(device)
    model = nn.Sequential(backbone, head)
    peak_lr = scaled_learning_rate(cfg.optim, cfg.batch_size)
    optimizer = classifier_optimizer(head, cfg.optim, peak_lr, backbone=backbone, layer_decay=cfg.layer_decay)
    train_loader = session.loader(train, cfg.batch_size, shuffle=True)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    session.echo(f"fine-tuning ({encoder.label}): {len(train)} training images, {len(test)} {test.name} images, "
                 f"{cfg.epochs} epochs, lr {peak_lr:g}, batch {cfg.batch_size}"
                 + (f", layer decay {cfg.layer_decay}" if cfg.layer_decay else ""))
    curve = Curve()
    top1 = top5 = math.nan
    for epoch in range(cfg.epochs):
        stats = train_epoch(model, train_loader, optimizer,
                            lambda s: learning_rate_at(s, steps_per_epoch, cfg.epochs, peak_lr, cfg.optim),
                            epoch * steps_per_epoch, device, cfg.label_smoothing,
                            nonfinite_hint="Lower finetune.optim.lr.")
        if (epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == cfg.epochs:
            top1, top5 = evaluate(model, session.loader(test, session.config.eval.batch_size), device)
            curve.epochs.append(epoch + 1)
            curve.test_top1.append(top1)
            curve.train_loss.append(stats.loss)
            curve.train_top1.append(stats.accuracy)
            session.echo(f"  epoch {epoch + 1}/{cfg.epochs}: loss {stats.loss:.4f}, test top-1 {top1:.4f}")
    return FinetuneResult(encoder.label, top1, top5, curve, cfg.epochs, peak_lr, len(train), len(test),
                          time.perf_counter() - started, backbone.cpu())
