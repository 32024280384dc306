import torch
from torch.utils.data import Dataset

from mocokit.training.sampling import EpochSampler, SeededSamples


def global_batches(size, batch, world, epoch=0, start_batch=0):
    """The global batches the `world` processes see together, as sets of indices."""
    per_rank = []
    for rank in range(world):
        sampler = EpochSampler(size, batch, seed=5, rank=rank, world=world)
        sampler.set_epoch(epoch, start_batch)
        keys = list(sampler)
        assert all(e == epoch for e, _ in keys) and len(keys) == len(sampler)
        per_rank.append([i for _, i in keys])
    steps = len(per_rank[0]) // batch
    return [sorted(sum((r[s * batch:(s + 1) * batch] for r in per_rank), [])) for s in range(steps)]


def test_global_batches_do_not_depend_on_the_number_of_processes():
    one = global_batches(103, batch=8, world=1)
    two = global_batches(103, batch=4, world=2)
    four = global_batches(103, batch=2, world=4)
    assert one == two == four and len(one) == 103 // 8


def test_every_index_at_most_once_per_epoch_and_epochs_differ():
    e0, e1 = global_batches(64, 8, 1, epoch=0), global_batches(64, 8, 1, epoch=1)
    assert sorted(sum(e0, [])) == list(range(64))
    assert e0 != e1


def test_resuming_mid_epoch_continues_the_same_order():
    full = global_batches(80, 8, 2, epoch=3)
    assert global_batches(80, 8, 2, epoch=3, start_batch=4) == full[4:]


class RandomItems(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, index):
        return torch.rand(3)


def test_seeded_samples_are_a_function_of_seed_epoch_and_index_and_leave_the_rng_alone():
    data = SeededSamples(RandomItems(), seed=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = data[(2, 7)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, data[(2, 7)])
    assert not torch.equal(a, data[(3, 7)]) and not torch.equal(a, data[(2, 6)])
    assert not torch.equal(a, SeededSamples(RandomItems(), seed=2)[(2, 7)])
