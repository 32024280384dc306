"""MoCo under DistributedDataParallel on two CPU processes (gloo), spawned by the test, against one process.

v3: loss and gradients on two processes equal those of one process on the concatenated batch (SyncBN included).
v1/v2: the queue is the same on both ranks after several steps, and equals the one-process queue when shuffle BN is
off; with shuffle BN, each rank's key encoder sees a permuted slice of the global batch.
"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mocokit import distributed
from mocokit.data import DataConfig, build_batch_augment
from mocokit.models import build_model
from mocokit.models.config import ModelConfig
from mocokit.models.sync_bn import SYNCED
from mocokit.training.launch import data_parallel

WORLD, LOCAL_BATCH, STEPS = 2, 4, 3
SMALL_VIT = dict(backbone="vit_tiny", backbone_args={"depth": 2}, image_size=16, patch_size=8, dim=16, hidden_dim=32)
SMALL_RESNET = dict(backbone="resnet18", cifar_stem=True, width=0.125, dim=16, hidden_dim=32, image_size=16)
CASES = {
    "v3-vit": ModelConfig(version="v3", temperature=0.2, **SMALL_VIT),
    "v3-resnet": ModelConfig(version="v3", temperature=1.0, **SMALL_RESNET),
    "v2-vit": ModelConfig(version="v2", queue_size=24, shuffle_bn=False, **SMALL_VIT),
    "v2-resnet-shuffle-bn": ModelConfig(version="v2", queue_size=24, shuffle_bn=True, bn_splits=2, **SMALL_RESNET),
}


def global_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two views of each step's global batch (WORLD·LOCAL_BATCH images), from a generator of its own."""
    generator = torch.Generator().manual_seed(1)
    shape = (WORLD * LOCAL_BATCH, 3, 16, 16)
    return [(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)) for _ in range(steps)]


def train(cfg: ModelConfig, steps: int, rank: int = 0, world: int = 1) -> dict:
    """`steps` SGD steps of a freshly seeded model, each on this rank's slice of the global batch."""
    torch.manual_seed(0)
    model = build_model(cfg)
    step_model = data_parallel(model, torch.device("cpu"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    key_inputs = []
    model.momentum_encoder.register_forward_pre_hook(lambda _module, args: key_inputs.append(args[0].clone()))
    losses, first_grads = [], None
    per_rank = WORLD * LOCAL_BATCH // world
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    for x1, x2 in global_batches(steps):
        out = step_model(x1[rows], x2[rows], momentum=0.9)
        optimizer.zero_grad()
        out["loss"].backward()
        if first_grads is None:  # DDP has averaged them over the ranks
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        model.end_step()
        losses.append(distributed.all_reduce_mean(out["loss"].detach()))
    synced = any(isinstance(m, SYNCED) for m in model.modules())
    queue = model.queue.keys.clone() if model.dictionary.name == "queue" else None
    return {"losses": torch.stack(losses), "grads": first_grads, "queue": queue, "synced_bn": synced,
            "key_inputs": key_inputs, "local_x2": [x2[rows] for _, x2 in global_batches(steps)]}


def augmented_views(rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The batched augmentation of this rank's slice of a global uint8 batch."""
    images = torch.randint(0, 256, (WORLD * LOCAL_BATCH, 3, 24, 24), generator=torch.Generator().manual_seed(2),
                           dtype=torch.uint8)
    per_rank = len(images) // world
    torch.manual_seed(3)
    return build_batch_augment(DataConfig(recipe="v2-small", image_size=16))(images[rank * per_rank:][:per_rank])


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results[rank] = {name: train(cfg, STEPS, rank, world) for name, cfg in CASES.items()}
        results[rank] = {**results[rank], "views": augmented_views(rank, world)}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(WORLD, os.path.join(tmp, "init"), results), nprocs=WORLD, join=True)
        return {rank: results[rank] for rank in range(WORLD)}


@pytest.mark.parametrize("case", ["v3-vit", "v3-resnet"])
def test_v3_loss_and_gradients_on_two_processes_equal_one_process_on_the_whole_batch(two_processes, case):
    one = train(CASES[case], STEPS)
    assert two_processes[0][case]["synced_bn"] and not one["synced_bn"]  # SyncBN only where there are processes
    for rank in range(WORLD):
        two = two_processes[rank][case]
        assert two["grads"].keys() == one["grads"].keys()  # gradients of the first step
        for name, grad in one["grads"].items():
            torch.testing.assert_close(two["grads"][name], grad, atol=2e-5, rtol=1e-3, msg=name)
        # the losses of every step, as the weights move
        torch.testing.assert_close(two["losses"], one["losses"], atol=1e-4, rtol=1e-4)


def test_v2_queues_agree_across_ranks_and_with_one_process_without_shuffle_bn(two_processes):
    rank0, rank1 = two_processes[0]["v2-vit"], two_processes[1]["v2-vit"]
    assert torch.equal(rank0["queue"], rank1["queue"])  # the gathered keys, enqueued in rank order everywhere
    one = train(CASES["v2-vit"], STEPS)
    torch.testing.assert_close(rank0["queue"], one["queue"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rank0["losses"], one["losses"], atol=1e-5, rtol=1e-4)


def test_v2_with_shuffle_bn_keys_come_from_a_permuted_slice_of_the_global_batch(two_processes):
    rank0, rank1 = two_processes[0]["v2-resnet-shuffle-bn"], two_processes[1]["v2-resnet-shuffle-bn"]
    assert torch.equal(rank0["queue"], rank1["queue"])
    assert not rank0["synced_bn"]  # v1/v2 keep BN per process: that is what shuffle BN relies on
    for step in range(STEPS):
        global_x2 = torch.cat([rank0["local_x2"][step], rank1["local_x2"][step]])
        seen = torch.cat([rank0["key_inputs"][step], rank1["key_inputs"][step]])  # what each key encoder encoded
        # every global image exactly once, but not in the order the ranks hold them
        matches = (seen.flatten(1)[:, None] == global_x2.flatten(1)[None]).all(-1)  # seen × global
        assert matches.sum(1).eq(1).all() and matches.sum(0).eq(1).all()
        assert not torch.equal(seen, global_x2)
        assert not torch.equal(rank0["key_inputs"][step], rank0["local_x2"][step])


def test_batched_augmentation_of_the_global_batch_is_the_same_on_two_processes_as_on_one(two_processes):
    one = augmented_views()
    for view in (0, 1):
        joined = torch.cat([two_processes[0]["views"][view], two_processes[1]["views"][view]])
        torch.testing.assert_close(joined, one[view])  # each rank's images get their own random crops and colours
