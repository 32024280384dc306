import pytest
import torch
from torch import nn

from mocokit.models.moco import MoCo
from mocokit.models.queue import Queue
from mocokit.models.shuffle_bn import SplitBatchNorm2d, shuffle_batch, split_batch_norms, unshuffle_batch


def test_shuffle_then_unshuffle_is_the_identity():
    x = torch.randn(16, 3, 2, 2)
    shuffled, unshuffle_index = shuffle_batch(x)
    assert not torch.equal(shuffled, x)  # it did permute
    assert sorted(shuffled[:, 0, 0, 0].tolist()) == sorted(x[:, 0, 0, 0].tolist())
    torch.testing.assert_close(unshuffle_batch(shuffled, unshuffle_index), x, rtol=0, atol=0)


def test_split_bn_matches_separate_batch_norms_per_group():
    bn = SplitBatchNorm2d(3, num_splits=4)
    plain = nn.BatchNorm2d(3)
    with torch.no_grad():
        for module in (bn, plain):
            module.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            module.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(16, 3, 5, 5) * 3 + 1
    out = bn(x)
    for group in range(4):  # group j holds samples j, j+4, j+8, j+12
        torch.testing.assert_close(out[group::4], plain(x[group::4]))
    # running statistics: the mean over groups of each group's update
    expected_mean = 0.1 * torch.stack([x[g::4].mean(dim=(0, 2, 3)) for g in range(4)]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_split_bn_compiled_form_matches_separate_batch_norms_per_group(channels_last, affine):
    """The form traced under torch.compile (statistics over a 5-D view) against one plain BatchNorm per group:
    outputs, gradients of the input and the affine parameters, and the running statistics (unbiased variance)."""
    splits, n, c = 4, 16, 3
    bn = SplitBatchNorm2d(c, num_splits=splits, affine=affine)
    plains = [nn.BatchNorm2d(c, affine=affine) for _ in range(splits)]
    if affine:
        with torch.no_grad():
            for module in (bn, *plains):
                module.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
                module.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(n, c, 5, 4, dtype=torch.float64) * 3 + 1
    bn, plains = bn.double(), [p.double() for p in plains]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_split, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = bn._grouped_forward(x_split, momentum=0.1)
    expected = torch.empty_like(out)
    for group in range(splits):  # group j holds samples j, j+4, j+8, j+12
        expected[group::splits] = plains[group](x_plain[group::splits])
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(x_split.grad, x_plain.grad)
    if affine:
        torch.testing.assert_close(bn.weight.grad, sum(p.weight.grad for p in plains))
        torch.testing.assert_close(bn.bias.grad, sum(p.bias.grad for p in plains))
    torch.testing.assert_close(bn.running_mean, torch.stack([p.running_mean for p in plains]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([p.running_var for p in plains]).mean(0))


def test_split_bn_takes_its_compiled_form_under_torch_compile(monkeypatch):
    traced = []
    grouped = SplitBatchNorm2d._grouped_forward
    monkeypatch.setattr(SplitBatchNorm2d, "_grouped_forward",
                        lambda self, x, momentum: traced.append(True) or grouped(self, x, momentum))
    bn = SplitBatchNorm2d(3, num_splits=4)
    x = torch.randn(16, 3, 4, 4)
    expected = SplitBatchNorm2d(3, num_splits=4)(x)
    assert not traced  # eager: the native kernel
    out = torch.compile(bn, backend="aot_eager", fullgraph=True)(x)
    assert traced
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_split_bn_is_plain_bn_in_eval_and_rejects_indivisible_batches():
    bn = SplitBatchNorm2d(3, num_splits=4)
    bn.running_mean.fill_(1.0)
    x = torch.randn(6, 3, 2, 2)
    bn.eval()
    torch.testing.assert_close(bn(x), (x - 1.0) / torch.sqrt(torch.tensor(1.0 + bn.eps)))
    bn.train()
    with pytest.raises(ValueError, match="bn_splits"):
        bn(x)


def test_split_batch_norms_replaces_plain_bn_and_keeps_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    net[1].running_var.fill_(2.0)
    split_batch_norms(net, 8)
    assert isinstance(net[1], SplitBatchNorm2d) and isinstance(net[2][0], SplitBatchNorm2d)
    assert net[1].num_splits == 8 and torch.equal(net[1].running_var, torch.full((4,), 2.0))


def group_probe_model(batch: int, splits: int, shuffle: bool) -> MoCo:
    """An encoder that is one split BatchNorm over `batch` channels. Fed one-hot images (image i lights channel i),
    its output row i is non-zero exactly on the channels of the images that shared image i's BN statistics."""
    backbone = split_batch_norms(nn.Sequential(nn.BatchNorm2d(batch, affine=False), nn.Flatten()), splits)
    return MoCo(backbone, nn.Identity(), None, Queue(8, batch), temperature=0.1, momentum=0.99, shuffle_bn=shuffle)


def bn_groups(rows: torch.Tensor) -> list[frozenset[int]]:
    return [frozenset(torch.nonzero(row.abs() > 1e-6).flatten().tolist()) for row in rows]


@pytest.mark.parametrize("batch,splits", [(32, 8), (16, 2), (64, 4)])
def test_single_device_shuffle_bn_gives_keys_other_statistics_than_their_queries(batch, splits):
    one_hot = torch.eye(batch).view(batch, batch, 1, 1)
    model = group_probe_model(batch, splits, shuffle=True).train()
    query_groups = bn_groups(model.encoder(one_hot))
    key_groups = bn_groups(model.momentum_keys(one_hot)[0])
    for i in range(batch):
        assert i in query_groups[i] and i in key_groups[i]
        assert len(query_groups[i]) == len(key_groups[i]) == batch // splits
        assert key_groups[i] != query_groups[i], f"key {i} was normalised with its own query's sub-batch"


def test_without_shuffle_keys_share_their_queries_statistics():
    # The failure the shuffle exists to prevent (and proof that the test above can fail).
    one_hot = torch.eye(16).view(16, 16, 1, 1)
    model = group_probe_model(16, 4, shuffle=False).train()
    assert bn_groups(model.encoder(one_hot)) == bn_groups(model.momentum_keys(one_hot)[0])
