"""Fine-tuning changes the backbone (a copy), few-label subsets, and transfer on a ResNet and on a ViT run."""

import pytest
import torch

from mocokit.evaluation.finetune import Curve, finetune, oscillation
from mocokit.evaluation.session import open_session
from mocokit.evaluation.transfer import transfer

TINY = ["finetune.epochs=2", "finetune.batch_size=16", "eval.test_images=12"]


def test_fine_tuning_changes_the_backbone_but_not_the_encoders_copy(resnet_run):
    session = open_session(resnet_run, [*TINY, "data.label_fraction=0.5"], echo=lambda _m: None)
    loaded = {k: v.clone() for k, v in session.encoder.backbone.state_dict().items()}
    result = finetune(session)
    tuned = result.backbone.state_dict()
    changed = [k for k in loaded if not torch.equal(loaded[k], tuned[k])]
    weights = [k for k in loaded if k.endswith("weight")]
    assert set(weights) <= set(changed)  # every weight tensor trained
    assert all(torch.equal(v, session.encoder.backbone.state_dict()[k]) for k, v in loaded.items())
    assert result.train_images == 30 and result.test_images == 12  # half of 3 classes × 20, stratified
    assert result.curve.epochs == [1, 2] and len(result.curve.test_top1) == 2


def test_transfer_runs_for_a_vit_with_layer_decay_and_draws_both_curves(vit_run):
    session = open_session(vit_run, [*TINY, "finetune.layer_decay=0.75", "finetune.optim.warmup_epochs=0"],
                           echo=lambda _m: None)
    assert session.encoder.is_vit
    result = transfer(session)
    assert result.pretrained.label == "pretrained" and result.random_init.label == "random init"
    assert result.pretrained.curve.epochs == result.random_init.curve.epochs == [1, 2]
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.plot.stat().st_size > 10_000
    assert result.gain == result.pretrained.top1 - result.random_init.top1
    # Same recipe and seed but other starting weights: the two runs must not be the same run.
    assert result.pretrained.curve.train_loss != result.random_init.curve.train_loss


def test_the_learning_curve_records_training_accuracy_and_its_oscillation(resnet_run):
    session = open_session(resnet_run, [*TINY, "finetune.epochs=3"], echo=lambda _m: None)
    curve = finetune(session).curve
    assert curve.epochs == [1, 2, 3] and len(curve.train_top1) == 3
    assert all(0.0 <= v <= 1.0 for v in curve.train_top1)
    steps = [abs(b - a) for a, b in zip(curve.test_top1, curve.test_top1[1:])]
    assert curve.oscillation() == pytest.approx(sum(steps) / 2)


def test_oscillation_is_the_mean_absolute_change_between_measurements():
    assert oscillation([0.5, 0.7, 0.6, 0.6]) == pytest.approx((0.2 + 0.1 + 0.0) / 3)
    assert oscillation([0.1, 0.2, 0.3]) == pytest.approx(0.1)  # a steady rise oscillates by its slope
    assert oscillation([0.4]) is None and oscillation([]) is None
    assert Curve(epochs=[1, 2], test_top1=[0.3, 0.1]).oscillation() == pytest.approx(0.2)
