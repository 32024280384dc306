"""SyncBN: plain BatchNorm on one process; on two CPU processes (gloo), exactly BatchNorm over the joined batch."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mocokit.models.shuffle_bn import SplitBatchNorm2d
from mocokit.models.sync_bn import GlobalBatchNorm, sync_batch_norms


def test_converted_modules_keep_their_state_and_split_bn_is_left_alone():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_()
    bn.weight.data.uniform_()
    bn.bias.requires_grad_(False)  # e.g. a momentum encoder's: it must stay frozen
    model = nn.Sequential(nn.Conv2d(3, 3, 1), bn, nn.Sequential(nn.BatchNorm1d(4, affine=False)),
                          SplitBatchNorm2d(3, num_splits=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sync_batch_norms(model)
    assert isinstance(model[1], GlobalBatchNorm) and isinstance(model[2][0], GlobalBatchNorm)
    assert isinstance(model[3], SplitBatchNorm2d)  # per-group statistics are local on purpose
    after = model.state_dict()
    assert before.keys() == after.keys()  # checkpoints load into synced and plain models alike
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model[1].weight.requires_grad and not model[1].bias.requires_grad


def test_on_one_process_it_is_plain_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 3, 3)
    plain, synced = nn.BatchNorm2d(5), GlobalBatchNorm(5)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.running_var, plain.running_var)


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same data and weights on every rank; each takes its slice of the batch
        x_all = torch.randn(world * 6, 4, 3, 3) * 3 + 1
        bn = GlobalBatchNorm(4)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
        x = x_all[rank * 6 : (rank + 1) * 6].clone().requires_grad_(True)
        out = bn(x)
        # a loss that is not symmetric in the samples, summed over ranks (DDP would average: the same up to 1/P)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads = [p.grad.clone() for p in (bn.weight, bn.bias)]
        for g in grads:
            dist.all_reduce(g)
        results[rank] = {"out": out.detach(), "x_grad": x.grad, "weight_grad": grads[0], "bias_grad": grads[1],
                         "running_mean": bn.running_mean, "running_var": bn.running_var}
    finally:
        dist.destroy_process_group()


def test_two_processes_normalise_and_differentiate_like_one_batch_norm_over_the_joined_batch():
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), results), nprocs=2, join=True)

    torch.manual_seed(0)  # the same draws as the workers, on one process with the whole batch
    x_all = (torch.randn(12, 4, 3, 3) * 3 + 1).requires_grad_(True)
    bn = nn.BatchNorm2d(4)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    out = bn(x_all)
    weights = torch.cat([torch.arange(out[:6].numel()).view_as(out[:6]).sin()] * 2)
    (out * weights).sum().backward()

    joined = {key: torch.cat([results[0][key], results[1][key]]) for key in ("out", "x_grad")}
    torch.testing.assert_close(joined["out"], out.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joined["x_grad"], x_all.grad, atol=1e-5, rtol=1e-5)
    for rank in (0, 1):
        torch.testing.assert_close(results[rank]["weight_grad"], bn.weight.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(results[rank]["bias_grad"], bn.bias.grad, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(results[rank]["running_mean"], bn.running_mean)
        torch.testing.assert_close(results[rank]["running_var"], bn.running_var)


@pytest.mark.parametrize("scope", ["all", "heads"])
def test_model_sync_bn_config_is_validated(scope):
    from mocokit.models.config import ModelConfig

    v3 = ModelConfig(version="v3", sync_bn=scope)
    assert v3.sync_bn_scope == scope
    assert ModelConfig(version="v3").sync_bn_scope == "all" and ModelConfig(version="v2").sync_bn_scope == "none"
    if scope == "all":
        with pytest.raises(ValueError, match="moco #46"):
            ModelConfig(version="v2", shuffle_bn=True, sync_bn=scope)
