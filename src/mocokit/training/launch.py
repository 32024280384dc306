"""Joining the process group that `torchrun` describes, and leaving it.

torchrun (PyTorch's own launcher, elastic included) starts one process per GPU and tells each who it is through
environment variables: WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. `process_group_from_environment`
reads them, picks the backend (NCCL for GPUs, gloo for CPUs), binds the process to its GPU, and tears the group down
at the end. Without those variables (a plain `mocokit pretrain`) it does nothing and the run is single-process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mocokit import distributed

# A rank that waits longer than this at a collective gives up with an error instead of hanging forever (a dead peer,
# or one rank stuck in a long evaluation). Generous, because rank 0 alone may spend minutes writing plots or a report.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def launched_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _attempt_store() -> dist.Store:
    """torchrun's key-value store (MASTER_ADDR:MASTER_PORT), under a prefix of its own for each elastic restart.
    The processes exchange their connection addresses through this store; after a restart the store may still
    hold the previous attempt's keys, and a process that reads a dead peer's address fails to connect (seen here
    with gloo: "connectFullMesh failed ... Connection refused"). A fresh prefix per attempt rules that out."""
    store, _rank, _world = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"mocokit/attempt_{attempt}/", store)


def backend_for(device: str) -> str:
    """NCCL when this run trains on CUDA GPUs, gloo on CPUs (and for train.device=cpu on a GPU machine)."""
    wants_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_gpu and dist.is_nccl_available() else "gloo"


@contextmanager
def process_group_from_environment(device: str = "auto") -> Iterator[bool]:
    """Join torchrun's process group for the body of the `with`; yields whether the run is multi-process. A group
    that is already initialised (a user's own script) is used as it is and left alone at the end."""
    if launched_world_size() == 1 or dist.is_initialized():
        yield dist.is_initialized() and dist.get_world_size() > 1
        return
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    dist.init_process_group(backend, store=_attempt_store(), rank=int(os.environ["RANK"]),
                            world_size=launched_world_size(), timeout=COLLECTIVE_TIMEOUT)
    try:
        with warnings.catch_warnings():
            if dist.get_rank() != 0:  # the same warning from every rank says nothing new; rank 0 speaks for all
                warnings.simplefilter("ignore")
            yield True
        # Leave together: a rank that tore its group down while rank 0 was still writing the report aborted now and
        # then ("terminate called without an active exception", gloo, about one run in six here). Not after an
        # exception: the other ranks may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DistributedDataParallel on multi-process runs (it averages the gradients over processes),
    `model` itself on one. Buffers are synced from rank 0 once, at the start, and not re-broadcast at every step
    (forward_sync_buffers=False; the official code's broadcast_buffers=True does re-broadcast them): the MoCo
    queue is kept equal on every rank by enqueueing the gathered keys, so broadcasting it (32 MB at K=65536) every
    step would only cost time. BatchNorm running statistics outside SyncBN then follow each rank's own batches;
    rank 0's are the ones saved and evaluated."""
    if not distributed.is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
