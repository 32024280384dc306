"""model.init: a pretraining run starts from an official-layout file (or its import), query and key encoder and
heads from the file, the queue not; the source is recorded in config.yaml."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mocokit.engine.pretrain import Pretraining
from mocokit.export import torchvision_resnet
from mocokit.export.importer import import_weights
from mocokit.training.initial import initial_model
from mocokit.training.run_config import load_config
from mocokit.weights import WeightsError
from mocokit.weights.read import file_sha256

from ..engine.conftest import write_image_folder
from .foreign import OfficialV1V2, save_official, v1v2_encoder

TINY = ["model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=1",
        "data.num_workers=0", "run.tensorboard=false", "run.progress=false", "monitor.knn_every_epochs=0",
        "monitor.health_images=0", "train.threads=1", "train.stop_at_step=1"]


def _official_cifar_v2():
    """The official v2 encoder around a torchvision ResNet-18 at width 0.125 with the CIFAR stem (v2-cifar10's)."""
    def encoder():
        resnet = torchvision_resnet("resnet18", width=0.125, cifar_stem=True)
        resnet.fc = nn.Linear(64, 128)  # num_classes=dim
        return v1v2_encoder(resnet, mlp=True)

    return OfficialV1V2(encoder, dim=128, K=32)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("init-images"), classes=2, per_class=24)


@pytest.mark.parametrize("via_import", [False, True])
def test_the_first_step_starts_from_the_files_weights_and_a_fresh_queue(tmp_path, images, via_import):
    official = _official_cifar_v2()
    path = save_official(tmp_path / "moco_v2.pth.tar", official, "resnet18")
    init = path
    if via_import:
        init = tmp_path / "imported"
        import_weights(path, init)
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={tmp_path / 'run'}",
                                     f"model.init={init}"])
    said: list[str] = []
    run = Pretraining(cfg, said.append)
    model = run.parts.model
    for mine, theirs in ((model.encoder, official.encoder_q), (model.momentum_encoder, official.encoder_k)):
        expected = {f"backbone.{k}": v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
        expected.update({f"head.{k[3:]}": v for k, v in theirs.state_dict().items() if k.startswith("fc.")})
        assert mine.state_dict().keys() == expected.keys()
        assert all(torch.equal(mine.state_dict()[k], v) for k, v in expected.items())
    # the queue is the one every run of this config starts from, not the file's (stale for new data)
    assert torch.equal(model.queue.keys, initial_model(cfg).queue.keys)
    assert not torch.equal(model.queue.keys, official.queue.t())
    record = (tmp_path / "run" / "config.yaml").read_text()
    assert "# model.init: " in record and file_sha256(run.init.path) in record
    assert any(line.startswith("initial weights: ") and "queue: random unit keys" in line for line in said)
    assert load_config(tmp_path / "run" / "config.yaml").model.init == str(init)  # the comment reloads
    result = run.run()
    assert result.steps_done == 1


def test_weights_that_do_not_fit_the_run_stop_it_before_training(tmp_path, images):
    path = save_official(tmp_path / "moco_v2.pth.tar", _official_cifar_v2(), "resnet18")
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={tmp_path / 'run'}",
                                     f"model.init={path}", "model.dim=64"])
    with pytest.raises(WeightsError, match=r"moco_v2\.pth\.tar: 'encoder_q\.fc\.2\.weight'"):
        Pretraining(cfg, lambda _m: None)
    assert not (tmp_path / "run" / "checkpoints").exists()
