"""Fine-tuning changes the backbone (a copy), few-label subsets, and transfer on a ResNet and on a ViT run."""

import torch

from mocokit.evaluation.finetune import finetune
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
