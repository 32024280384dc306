"""Does pretraining pay? The same network fine-tuned on the same labelled images from random initialisation and
from the pretrained weights, with the same recipe, head initialisation and batch order; both learning curves in one
plot and the final accuracies side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mocokit.evaluation.curves import plot_learning_curves
from mocokit.evaluation.encoders import random_encoder
from mocokit.evaluation.finetune import FinetuneResult, finetune
from mocokit.evaluation.session import EvalSession


@dataclass
class TransferResult:
    pretrained: FinetuneResult
    random_init: FinetuneResult
    plot: Path

    @property
    def gain(self) -> float:
        """Final top-1 of the pretrained start minus that of the random start (negative: scratch won)."""
        return self.pretrained.top1 - self.random_init.top1


def transfer(session: EvalSession, plot_name: str = "transfer.png") -> TransferResult:
    scratch = random_encoder(session.encoder.config)
    pretrained = finetune(session)
    random_init = finetune(session, scratch)
    cfg = session.encoder.config
    title = (f"{cfg.model.backbone} fine-tuned on {pretrained.train_images} labelled images, "
             f"{pretrained.epochs} epochs")
    plot = plot_learning_curves({"pretrained (MoCo)": pretrained.curve, "random init": random_init.curve}, title,
                                session.output_dir / plot_name)
    return TransferResult(pretrained, random_init, plot)
