"""model.init: a pretraining run starts from an official-layout file (or its import), query and key encoder and
heads from the file, the queue not: it is filled afresh by the loaded key encoder (tests/engine/test_dictionary_fill.py
checks its keys); the source is recorded in config.yaml, metrics.jsonl and the report. A resume does neither again."""

from __future__ import annotations

import html

import pytest
import torch
from torch import nn

from mocokit.engine.pretrain import Pretraining
from mocokit.export import torchvision_resnet
from mocokit.export.importer import import_weights
from mocokit.models.queue import NO_IMAGE
from mocokit.reporting.metrics import METRICS_FILE, read_metrics
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
    # the queue is neither the file's (stale for new data) nor random unit keys: keys of this run's images
    queue = model.queue
    assert not torch.equal(queue.keys, official.queue.t())
    assert not torch.equal(queue.keys, initial_model(cfg).queue.keys)
    assert int(queue.ptr) == 0 and (queue.ids != NO_IMAGE).all()
    assert set(queue.ids.tolist()) <= set(range(len(run.data.dataset)))
    record = (tmp_path / "run" / "config.yaml").read_text()
    assert "# model.init: " in record and file_sha256(run.init.path) in record
    assert any(line.startswith("initial weights: ") and "layout" in line for line in said)
    # v2-cifar10 is symmetric: each image gives the keys of both views, 2 x 16 = K = 32
    assert any(line.startswith("queue filled with 32 keys of 1 batch of training images by the initial key encoder")
               for line in said)
    assert load_config(tmp_path / "run" / "config.yaml").model.init == str(init)  # the comment reloads
    result = run.run()
    assert result.steps_done == 1
    init_records = read_metrics(tmp_path / "run" / METRICS_FILE)["init"]
    assert len(init_records) == 1
    logged = init_records[0]
    assert (logged["given"], logged["path"], logged["sha256"]) == (str(init), str(run.init.path), run.init.sha256)
    assert logged["fill"]["dictionary"] == "queue" and logged["fill"]["entries"] == 32
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Initial weights" in page and run.init.sha256 in page and html.escape(str(run.init.path)) in page
    assert "32 keys of 1 batch" in page

    # a resume continues from its own checkpoint: no new load, no new fill, no new record
    checkpointed = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]["queue.keys"]
    again: list[str] = []
    resumed = Pretraining(load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={tmp_path / 'run'}",
                                                     f"model.init={init}", "train.stop_at_step=2"]), again.append)
    assert torch.equal(resumed.parts.model.queue.keys, checkpointed)
    assert not any(line.startswith("queue filled") for line in again)
    resumed.run()
    assert len(read_metrics(tmp_path / "run" / METRICS_FILE)["init"]) == 1


def test_weights_that_do_not_fit_the_run_stop_it_before_training(tmp_path, images):
    path = save_official(tmp_path / "moco_v2.pth.tar", _official_cifar_v2(), "resnet18")
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={tmp_path / 'run'}",
                                     f"model.init={path}", "model.dim=64"])
    with pytest.raises(WeightsError, match=r"moco_v2\.pth\.tar: 'encoder_q\.fc\.2\.weight'"):
        Pretraining(cfg, lambda _m: None)
    assert not (tmp_path / "run" / "checkpoints").exists()
