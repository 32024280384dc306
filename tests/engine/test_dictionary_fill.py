"""A fresh queue (memory bank) filled before the first step with the keys the step itself would compute: checked
against keys computed here, independently, from the images and augmentations of "epoch -1", with shuffle BN
replayed from the generator state the fill started from; nothing but the dictionary changes. On two processes
(gloo) the gathers must put every process's keys and image ids in the global batch's order, and each process hold
the whole dictionary."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.engine.dictionary_fill import fill_dictionary
from mocokit.engine.pretrain import setup_data, setup_training
from mocokit.models.queue import NO_IMAGE
from mocokit.training.run_config import load_config
from mocokit.training.sampling import SeededSamples

TINY = ["model.width=0.125", "train.batch_size=16", "data.num_workers=0", "train.threads=1", "train.device=cpu"]


def _parts(images, *overrides):
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={images}", *overrides])
    device = torch.device("cpu")
    data = setup_data(cfg, device)
    return cfg, data, setup_training(cfg, device, len(data.dataset))


def _sequence(data, positions: int) -> list[tuple[int, int]]:
    """(epoch, index) of the fill's first `positions` images: epoch -1's order, then epoch -2's."""
    size = len(data.dataset)
    orders = {e: data.sampler.epoch_order(e).tolist() for e in (-1, -2, -3)}
    return [(-1 - p // size, orders[-1 - p // size][p % size]) for p in range(positions)]


def _views(data, keys, seed):
    samples = SeededSamples(data.dataset, seed)
    items = [samples[key] for key in keys]
    return torch.stack([v[0] for v, _, _ in items]), torch.stack([v[1] for v, _, _ in items])


def _shuffled_keys(encoder, x):
    """MoCo's shuffle BN on one process, written out: a permutation from the global generator, the encoder on the
    permuted batch (train mode: batch statistics per BN group), rows put back."""
    permutation = torch.randperm(x.shape[0])
    return F.normalize(encoder(x[permutation]), dim=1)[torch.argsort(permutation)]


@pytest.mark.parametrize("symmetric", [True, False])
def test_the_queue_holds_the_key_encoders_keys_of_epoch_minus_one(tiny_images, symmetric):
    # 72 images, global batch 16, K = 40: ceil(40 / 32) = 2 batches (symmetric: both views' keys), else 3
    cfg, data, parts = _parts(tiny_images, "model.queue_size=40", "model.bn_splits=2",
                              f"model.symmetric={str(symmetric).lower()}")
    model = parts.model
    reference = copy.deepcopy(model.momentum_encoder).train()
    buffers = {n: b.clone() for n, b in model.named_buffers() if not n.startswith("queue.")}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    said = []

    fill = fill_dictionary(parts.run_step, data.loader, said.append)

    views_per_image = 2 if symmetric else 1
    batches = math.ceil(40 / (16 * views_per_image))
    assert (fill.entries, fill.batches, fill.images) == (40, batches, 16 * batches)
    assert said == [f"queue filled with 40 keys of {batches} batches of training images by the initial key encoder, "
                    f"{fill.seconds:.1f} s"]
    expected_keys, expected_ids = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.set_rng_state(rng)  # the fill's shuffle BN draws from the state it started with
        for b in range(batches):
            keys = _sequence(data, 16 * batches)[16 * b: 16 * (b + 1)]
            view1, view2 = _views(data, keys, cfg.train.seed)
            k2 = _shuffled_keys(reference, view2)
            if symmetric:  # keys of view 2 are computed first (the step's order), stored after those of view 1
                k1 = _shuffled_keys(reference, view1)
                expected_keys += [k1, k2]
                expected_ids += [torch.tensor([i for _, i in keys])] * 2
            else:
                expected_keys.append(k2)
                expected_ids.append(torch.tensor([i for _, i in keys]))
    queue = model.queue
    torch.testing.assert_close(queue.keys, torch.cat(expected_keys)[:40], rtol=0, atol=1e-5)
    assert torch.equal(queue.ids, torch.cat(expected_ids)[:40])
    assert (queue.ids != NO_IMAGE).all() and int(queue.ptr) == 0
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(40))
    # nothing else changed: parameters, BatchNorm running statistics, the global generator
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers() if not n.startswith("queue."))
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training


def test_the_first_step_after_a_fill_sees_the_filled_queue_and_replaces_its_oldest_keys(tiny_images):
    cfg, data, parts = _parts(tiny_images, "model.queue_size=48", "model.bn_splits=2")
    fill_dictionary(parts.run_step, data.loader, lambda _m: None)
    filled = parts.model.queue.keys.clone()
    views, _labels, indices = next(iter(data.loader))
    parts.run_step(views, lr=0.0, momentum=1.0, indices=indices)  # lr 0, m 1: the encoders stay as they are
    queue = parts.model.queue
    assert int(queue.ptr) == 32  # the step's 2 x 16 keys went into slots 0..31, the oldest
    assert torch.equal(queue.keys[32:], filled[32:])
    assert torch.equal(queue.ids[:16], indices) and torch.equal(queue.ids[16:32], indices)


def test_the_memory_bank_gets_one_row_per_image_from_the_query_encoder(tiny_images):
    # 40 of the 72 images, batch 16: ceil(40 / 16) = 3 batches, the last completed by 8 images of epoch -2
    cfg, data, parts = _parts(tiny_images, "model.dictionary=memory_bank", "model.queue_size=8",
                              "model.symmetric=false", "data.max_images=40")
    model = parts.model
    reference = copy.deepcopy(model.encoder).train()
    said = []
    fill = fill_dictionary(parts.run_step, data.loader, said.append)
    assert (fill.entries, fill.batches, fill.images) == (40, 3, 48)
    assert said[0].startswith("memory bank filled with 40 rows of 3 batches of training images by the initial "
                              "query encoder")
    expected = torch.zeros(40, 128)
    sequence = _sequence(data, 48)
    with torch.no_grad():
        for b in range(3):
            keys = sequence[16 * b: 16 * (b + 1)]
            view1, _view2 = _views(data, keys, cfg.train.seed)
            features = F.normalize(reference(view1), dim=1)
            for row, (epoch, index) in enumerate(keys):
                if epoch == -1:  # epoch -2's images only complete the last batch
                    expected[index] = features[row]
    assert sorted(i for e, i in sequence if e == -1) == list(range(40))  # every image exactly once
    torch.testing.assert_close(model.memory_bank.features, expected, rtol=0, atol=1e-5)


def test_dictionaries_without_stored_keys_are_left_alone(tiny_images):
    cfg = load_config("v3-cifar10", [*TINY, f"data.path={tiny_images}"])
    data = setup_data(cfg, torch.device("cpu"))
    parts = setup_training(cfg, torch.device("cpu"), len(data.dataset))
    said = []
    assert fill_dictionary(parts.run_step, data.loader, said.append) is None
    assert said == []


def _fill_on_two_processes(rank: int, world: int, init_file: str, images, overrides, results) -> None:
    """One of two gloo processes: the run's data and model for this rank (8 of each global batch of 16), then the
    fill from a fixed generator state; the filled dictionary goes back to the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _cfg, data, parts = _parts(images, *overrides)
        torch.manual_seed(1234)  # shuffle BN's permutations: drawn on rank 0, broadcast
        fill_dictionary(parts.run_step, data.loader, lambda _m: None)
        results[rank] = {name: b.clone() for name, b in parts.model.dictionary.named_buffers()}
    finally:
        dist.destroy_process_group()


def _filled_on_two_processes(images, tmp_path, overrides) -> dict:
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_fill_on_two_processes, args=(2, str(tmp_path / "init"), images, overrides, results), nprocs=2,
             join=True)
    for name, buffer in results[0].items():  # every process holds the whole dictionary
        assert torch.equal(buffer, results[1][name]), name
    return results[0]


def _per_process(encoder, x):
    """The encoder on the global batch as two processes run it: each on its half, BatchNorm over its 8 images."""
    return torch.cat([encoder(x[:8]), encoder(x[8:])])


def test_two_processes_fill_the_queue_with_the_global_batches_keys_in_order(tiny_images, tmp_path):
    # K = 40, global batch 16 (8 per process), symmetric: ceil(40 / 32) = 2 global batches, keys of both views
    overrides = ("model.queue_size=40", "model.bn_splits=2")  # 2 processes: one BatchNorm group each
    filled = _filled_on_two_processes(tiny_images, tmp_path, overrides)
    # the reference on one process: the same initial weights (train.seed), one BN group per half of the batch
    cfg, data, parts = _parts(tiny_images, "model.queue_size=40", "model.bn_splits=1")
    reference = copy.deepcopy(parts.model.momentum_encoder).train()
    sequence = _sequence(data, 32)
    expected_keys, expected_ids = [], []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1234)
        for b in range(2):
            keys = sequence[16 * b: 16 * (b + 1)]
            view1, view2 = _views(data, keys, cfg.train.seed)
            k2, k1 = (_shuffled_keys(lambda x: _per_process(reference, x), v) for v in (view2, view1))
            expected_keys += [k1, k2]  # view 2's keys computed first, stored after view 1's
            expected_ids += [torch.tensor([i for _, i in keys])] * 2
    torch.testing.assert_close(filled["keys"], torch.cat(expected_keys)[:40], rtol=0, atol=1e-5)
    assert torch.equal(filled["ids"], torch.cat(expected_ids)[:40]) and int(filled["ptr"]) == 0


def test_two_processes_fill_the_memory_bank_with_each_images_query_feature(tiny_images, tmp_path):
    # 40 images, global batch 16: 3 batches, the last completed by 8 images of epoch -2 (not written)
    overrides = ("model.dictionary=memory_bank", "model.queue_size=8", "model.symmetric=false", "data.max_images=40")
    filled = _filled_on_two_processes(tiny_images, tmp_path, (*overrides, "model.bn_splits=2"))
    cfg, data, parts = _parts(tiny_images, *overrides, "model.bn_splits=1")
    reference = copy.deepcopy(parts.model.encoder).train()
    expected = torch.zeros(40, 128)
    sequence = _sequence(data, 48)
    with torch.no_grad():
        for b in range(3):
            keys = sequence[16 * b: 16 * (b + 1)]
            view1, _view2 = _views(data, keys, cfg.train.seed)
            features = F.normalize(_per_process(reference, view1), dim=1)
            for row, (epoch, index) in enumerate(keys):
                if epoch == -1:
                    expected[index] = features[row]
    torch.testing.assert_close(filled["features"], expected, rtol=0, atol=1e-5)
