"""The alternative dictionaries: end-to-end (keys from the batch, gradients through both sides) and the memory bank
(stored features, refreshed for the sampled images), against slow references written from the MoCo paper."""

import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.models import build_model
from mocokit.models.config import ModelConfig
from mocokit.models.dictionaries import EndToEnd
from mocokit.models.memory_bank import MemoryBank

SMALL = dict(backbone="resnet18", cifar_stem=True, width=0.125, dim=8, queue_size=16, bn_splits=1)


def views(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.randn(n, 3, 16, 16, generator=generator)


def test_end_to_end_loss_is_in_batch_info_nce_of_one_encoder_and_trains_the_keys_side():
    torch.manual_seed(0)
    model = build_model(ModelConfig(version="v2", dictionary="end_to_end", shuffle_bn=False, **SMALL))
    assert isinstance(model.dictionary, EndToEnd) and model.momentum_encoder is None
    x1, x2 = views()
    out = model(x1, x2)
    with torch.no_grad():  # slow reference: one encoder, keys of the same batch, positive on the diagonal
        q = F.normalize(model.encoder(x1), dim=1)
        k = F.normalize(model.encoder(x2), dim=1)
        expected = sum(-math.log(math.exp(float(q[i] @ k[i]) / model.temperature)
                                 / sum(math.exp(float(q[i] @ k[j]) / model.temperature) for j in range(len(k))))
                       for i in range(len(q))) / len(q)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # gradients flow through the keys too: the loss changes if only the key side's input changes
    model.zero_grad()
    out["loss"].backward()
    head_grad = model.encoder.head[-1].weight.grad.clone()
    model.zero_grad()
    q_only = F.normalize(model.encoder(x1), dim=1) @ k.T / model.temperature  # keys as constants
    F.cross_entropy(q_only, torch.arange(len(q))).backward()
    assert not torch.allclose(head_grad, model.encoder.head[-1].weight.grad)


def test_memory_bank_reads_stored_positives_and_refreshes_only_the_batch_entries():
    torch.manual_seed(0)
    model = build_model(ModelConfig(version="v2", dictionary="memory_bank", shuffle_bn=False, symmetric=False,
                                    mask_own_keys=False,
                                    **SMALL), dataset_size=40)
    assert isinstance(model.dictionary, MemoryBank) and model.memory_bank.negatives == 16
    assert model.needs_indices and model.momentum_encoder is None
    before = model.memory_bank.features.clone()
    indices = torch.tensor([3, 9, 11, 20, 21, 39])
    x1, x2 = views()
    state = torch.get_rng_state()
    out = model(x1, x2, indices=indices)
    torch.set_rng_state(state)  # the same negatives draw as inside forward
    negatives = model.memory_bank.sample_negatives()
    negatives_before = before[(negatives[:, None] == model.memory_bank.features[None]).all(-1).float().argmax(1)]
    with torch.no_grad():
        q = F.normalize(model.encoder(x1), dim=1)
        logits = torch.cat([(q * before[indices]).sum(1, keepdim=True), q @ negatives_before.T], 1) / model.temperature
        expected = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(model.memory_bank.features, before)  # written by end_step, after the backward
    model.end_step()
    after = model.memory_bank.features
    torch.testing.assert_close(after[indices], F.normalize(0.5 * before[indices] + 0.5 * q, dim=1))
    others = torch.ones(40, dtype=torch.bool)
    others[indices] = False
    assert torch.equal(after[others], before[others])
    with pytest.raises(ValueError, match="dataset index"):
        model(x1, x2)


def test_the_alternatives_are_for_v1_v2_and_the_bank_needs_the_dataset_size():
    with pytest.raises(ValueError, match="v1/v2"):
        ModelConfig(version="v3", dictionary="end_to_end")
    with pytest.raises(ValueError, match="dataset size"):
        build_model(ModelConfig(version="v2", dictionary="memory_bank", **SMALL))


def test_a_checkpoint_that_still_carries_the_unused_momentum_encoder_loads():
    """Earlier versions kept a momentum encoder in end-to-end and memory-bank models (never used); their
    checkpoints load into the models that no longer have one."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(version="v2", dictionary="end_to_end", **SMALL))
    old_state = {**model.state_dict(), **{f"momentum_encoder.{k}": v for k, v in model.encoder.state_dict().items()}}
    restored = build_model(ModelConfig(version="v2", dictionary="end_to_end", **SMALL))
    restored.load_state_dict(old_state)  # strict: every other key must still match
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        restored.load_state_dict({**old_state, "something.else": torch.zeros(1)})
