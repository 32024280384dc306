"""The linear probe: the backbone is left exactly as loaded (and the guard fires when it is not), both modes
train, the lr-30 NaN is caught with what to do."""

import pytest
import torch
from torch import nn

from mocokit.errors import NonFiniteLoss
from mocokit.evaluation.classifier import BackboneChanged
from mocokit.evaluation.linear import linear_probe, resolve_mode
from mocokit.evaluation.session import open_session
from mocokit.training.checkpoint import load_checkpoint

FAST = ["linear.epochs=3", "linear.optim.milestones=[2]", "linear.batch_size=16"]


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_probe_leaves_every_backbone_tensor_as_in_the_checkpoint(resnet_run, mode):
    session = open_session(resnet_run, [*FAST, f"linear.mode={mode}", "eval.cache=false"], echo=lambda _m: None)
    result = linear_probe(session)
    assert result.mode == mode and result.train_images == 60 and result.test_images == 18
    assert 0.0 <= result.top1 <= result.top5 <= 1.0 and result.final_train_loss == result.final_train_loss
    stored = load_checkpoint(resnet_run / "checkpoints" / "last.pt")["model"]
    state = session.encoder.backbone.state_dict()
    assert len(state) > 10
    for name, tensor in state.items():
        assert torch.equal(tensor, stored[f"encoder.backbone.{name}"]), name


class Drifting(nn.Module):
    """A backbone that changes one of its own buffers on every call: what the guard must catch."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_features = backbone, backbone.num_features
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, images):
        self.calls += 1
        return self.inner(images)


def test_the_guard_fires_when_something_changes_the_backbone(resnet_run):
    session = open_session(resnet_run, [*FAST, "linear.mode=full", "linear.epochs=1"], echo=lambda _m: None)
    session.encoder.backbone = Drifting(session.encoder.backbone)
    with pytest.raises(BackboneChanged, match="calls"):
        linear_probe(session)


def test_a_diverging_probe_stops_with_the_fix_and_feature_norm_fixes_it(resnet_run):
    huge = ["linear.mode=fast", "linear.epochs=2", "linear.optim.milestones=[5]", "linear.optim.lr=1e38",
            "linear.init_std=1e30"]
    session = open_session(resnet_run, huge, echo=lambda _m: None)
    with pytest.raises(NonFiniteLoss, match="linear.feature_norm=batchnorm"):
        linear_probe(session)
    normed = open_session(resnet_run, [*FAST, "linear.mode=fast", "linear.feature_norm=batchnorm"],
                          echo=lambda _m: None)
    assert linear_probe(normed).top1 > 0.5  # lr 30 on standardised features: finite, and colour classes separate


def test_auto_mode_is_fast_on_a_cpu_and_full_on_a_gpu():
    assert resolve_mode("auto", torch.device("cpu")) == "fast"
    assert resolve_mode("auto", torch.device("cuda", 0)) == "full"
    assert resolve_mode("full", torch.device("cpu")) == "full"


@pytest.fixture(scope="module")
def relabelled_test_split(labelled_images, tmp_path_factory):
    """The labelled images with the test split's class folders rotated (class0's images filed as class1, ...): a
    probe trained on the train split predicts each test image's colour class, which is now always the wrong label;
    a probe that saw the test split learns the rotated labels, as easy to separate (colour), and scores high."""
    import shutil

    root = tmp_path_factory.mktemp("relabelled") / "images"
    shutil.copytree(labelled_images / "train", root / "train")
    classes = sorted(p.name for p in (labelled_images / "test").iterdir())
    for c, name in enumerate(classes):
        shutil.copytree(labelled_images / "test" / name, root / "test" / classes[(c + 1) % len(classes)])
    return root


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_the_probe_is_trained_on_the_train_split_only(resnet_run, relabelled_test_split, mode):
    data = [f"data.path={relabelled_test_split}", "eval.cache=false", f"linear.mode={mode}"]
    # Standardised features and 10 epochs: the probe separates the colour classes (top-1 ~1 on honest labels).
    settings = [*FAST, "linear.epochs=10", "linear.optim.milestones=[8]", "linear.feature_norm=batchnorm"]
    session = open_session(resnet_run, [*settings, *data], echo=lambda _m: None)
    result = linear_probe(session)
    assert result.train_images == 60 and result.test_images == 18
    # Chance is 1/3; a probe that learned the train split's colour classes gets the rotated labels wrong.
    assert result.top1 < 1 / 3, f"top-1 {result.top1:.3f} on rotated test labels: was the probe trained on them?"
