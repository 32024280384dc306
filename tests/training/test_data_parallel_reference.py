"""Two gloo processes against slow one-process references computed here, not against another run of the same code.

- MoCo v2: after the last step, the queue rows written by that step hold normalize(f_k(x)) of the GLOBAL batch (both
  ranks' images, in rank order), f_k being the momentum encoder of that step (no later step moved it), on both ranks,
  and the queue's identities are those images' dataset indices, the same on both ranks.
- MoCo v3: the first step's loss, averaged over the ranks, is the symmetric 2T-scaled loss of the whole global batch
  by hand: every key of both ranks is a negative, and SyncBN normalises over the global batch like one process does.
"""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mocokit import distributed
from mocokit.models import ModelConfig, build_model
from mocokit.training.launch import data_parallel

WORLD, LOCAL_BATCH = 2, 4
V2 = ModelConfig(version="v2", queue_size=20, shuffle_bn=False, backbone="vit_tiny", backbone_args={"depth": 1},
                 image_size=16, patch_size=8, dim=8, hidden_dim=16)
V3 = ModelConfig(version="v3", temperature=0.5, backbone="resnet18", cifar_stem=True, width=0.125, dim=8,
                 hidden_dim=16)
V2_STEPS, M = 2, 0.9


def global_views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of step `step`'s global batch (WORLD·LOCAL_BATCH images)."""
    generator = torch.Generator().manual_seed(10 + step)
    shape = (WORLD * LOCAL_BATCH, 3, 16, 16)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def global_indices(step: int) -> torch.Tensor:
    """The dataset indices of step `step`'s global batch (distinct per step, as a sampler's)."""
    return torch.arange(WORLD * LOCAL_BATCH) + 100 * step


def run_steps(cfg: ModelConfig, steps: int, rank: int, world: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg)
    step_model = data_parallel(model, torch.device("cpu"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    losses = []
    for step in range(steps):
        x1, x2 = global_views(step)
        out = step_model(x1[rows], x2[rows], momentum=M, indices=global_indices(step)[rows])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.end_step()
        losses.append(distributed.all_reduce_mean(out["loss"].detach()))
    queue = getattr(model, "queue", None)
    return {"losses": torch.stack(losses),
            "queue": None if queue is None else (queue.keys.clone(), int(queue.ptr), queue.ids.clone()),
            "momentum_encoder": {k: v.clone() for k, v in model.momentum_encoder.state_dict().items()}}


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results[rank] = {"v2": run_steps(V2, V2_STEPS, rank, world), "v3": run_steps(V3, 1, rank, world)}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        # forked, not spawned: the children skip re-importing torch and mocokit (most of the cost of this fixture)
        mp.start_processes(_worker, args=(WORLD, os.path.join(tmp, "init"), results), nprocs=WORLD, join=True,
                           start_method="fork")
        return {rank: results[rank] for rank in range(WORLD)}


def test_v2_queue_holds_the_momentum_keys_of_the_whole_global_batch_in_rank_order(two_processes):
    torch.manual_seed(0)
    key_encoder = build_model(V2).momentum_encoder  # one process, the same architecture
    key_encoder.load_state_dict(two_processes[0]["v2"]["momentum_encoder"])  # f_k as the last step used it
    _, x2 = global_views(V2_STEPS - 1)
    with torch.no_grad():  # one image at a time: a ViT has no batch statistics
        expected = torch.cat([F.normalize(key_encoder(x2[i : i + 1]), dim=1) for i in range(len(x2))])
    per_step = WORLD * LOCAL_BATCH  # asymmetric loss: each global image's view-2 key once
    rows = [(V2_STEPS - 1) * per_step % V2.queue_size + i for i in range(per_step)]
    rows = [r % V2.queue_size for r in rows]
    for rank in range(WORLD):
        keys, ptr, ids = two_processes[rank]["v2"]["queue"]
        assert ptr == V2_STEPS * per_step % V2.queue_size
        torch.testing.assert_close(keys[rows], expected, atol=1e-5, rtol=1e-4)
        assert ids[rows].tolist() == global_indices(V2_STEPS - 1).tolist()  # each key's image, gathered alike
    assert torch.equal(two_processes[0]["v2"]["queue"][2], two_processes[1]["v2"]["queue"][2])


def slow_ctr(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """ctr(q, k)·2T as a loop: query i's positive is key i, every other key of the global batch is a negative."""
    terms = []
    for i in range(q.shape[0]):
        logits = torch.stack([q[i] @ k[j] for j in range(k.shape[0])]) / temperature
        terms.append(torch.logsumexp(logits, dim=0) - logits[i])
    return torch.stack(terms).mean() * 2 * temperature


def test_v3_first_step_loss_on_two_processes_is_the_global_batch_loss_by_hand(two_processes):
    torch.manual_seed(0)
    model = build_model(V3).train()  # the initial weights both ranks started from; one process, plain BatchNorm
    with torch.no_grad():
        query = dict(model.encoder.named_parameters())
        for name, k in model.momentum_encoder.named_parameters():
            k.copy_(M * k + (1 - M) * query[name])
        x1, x2 = global_views(0)  # the whole global batch: BatchNorm statistics over all 8 images, as SyncBN
        q1, q2 = (F.normalize(model.predictor(model.encoder(x)), dim=1) for x in (x1, x2))
        k1, k2 = (F.normalize(model.momentum_encoder(x), dim=1) for x in (x1, x2))
    expected = slow_ctr(q1, k2, V3.temperature) + slow_ctr(q2, k1, V3.temperature)
    for rank in range(WORLD):
        torch.testing.assert_close(two_processes[rank]["v3"]["losses"][0], expected, atol=1e-5, rtol=1e-5)
