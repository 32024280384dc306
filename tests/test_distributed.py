"""Collectives and shuffle BN on two real processes (gloo on the CPU), spawned by the test."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mocokit import distributed
from mocokit.losses import batch_contrastive_loss
from mocokit.models.shuffle_bn import shuffle_batch, unshuffle_batch


def test_helpers_are_identities_on_one_process():
    x = torch.randn(4, 3)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert distributed.all_gather_concat(x) is x
    assert distributed.broadcast_(x) is x
    assert distributed.all_reduce_mean(x) is x


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # different local RNGs: the permutation must still agree (broadcast)
        n = 4
        local = torch.arange(n, dtype=torch.float32)[:, None] + 10 * rank  # rank r holds 10r .. 10r+3
        gathered = distributed.all_gather_concat(local)
        shuffled, unshuffle_index = shuffle_batch(local)
        restored = unshuffle_batch(shuffled * 2, unshuffle_index)  # an "encoder" that doubles its input

        # v3 loss: both ranks' local losses, averaged, equal the one-process loss on the whole batch
        torch.manual_seed(7)
        q_all, k_all = F.normalize(torch.randn(2 * n, 8), dim=1), F.normalize(torch.randn(2 * n, 8), dim=1)
        k_global = distributed.all_gather_concat(k_all[rank * n : (rank + 1) * n])
        loss, _ = batch_contrastive_loss(q_all[rank * n : (rank + 1) * n], k_global, 0.2, distributed.rank())
        results[rank] = {
            "gathered": gathered, "shuffled": shuffled, "restored": restored, "local": local,
            "unshuffle": unshuffle_index, "loss": distributed.all_reduce_mean(loss.detach()),
            "one_process_loss": batch_contrastive_loss(q_all, k_all, 0.2, 0)[0],
        }
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_shuffle_and_loss():
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), results), nprocs=2, join=True)
    r0, r1 = results[0], results[1]
    expected_global = torch.cat([r0["local"], r1["local"]])
    assert torch.equal(r0["gathered"], expected_global) and torch.equal(r1["gathered"], expected_global)
    assert torch.equal(r0["unshuffle"], r1["unshuffle"])  # one permutation for everyone
    # each rank encodes a slice of the permuted global batch; together the slices are the whole batch
    together = torch.cat([r0["shuffled"], r1["shuffled"]])
    assert sorted(together.flatten().tolist()) == sorted(expected_global.flatten().tolist())
    assert not torch.equal(together, expected_global)
    # unshuffle gives every rank its own images back, in order, after the encoder
    assert torch.equal(r0["restored"], 2 * r0["local"]) and torch.equal(r1["restored"], 2 * r1["local"])
    torch.testing.assert_close(r0["loss"], r0["one_process_loss"])
