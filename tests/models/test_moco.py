import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mocokit.losses import info_nce_with_queue
from mocokit.models import ModelConfig, build_model

TINY_RESNET = dict(backbone="resnet18", width=0.125, cifar_stem=True)
TINY_VIT = dict(backbone="vit_tiny", image_size=16, patch_size=8, backbone_args={"depth": 2})

CONFIGS = {
    "v1": ModelConfig(version="v1", queue_size=50, bn_splits=2, **TINY_RESNET),
    "v2-symmetric": ModelConfig(version="v2", queue_size=50, bn_splits=2, symmetric=True, **TINY_RESNET),
    "v3-resnet": ModelConfig(version="v3", hidden_dim=32, dim=16, momentum_schedule="cosine", shuffle_bn=False,
                             **TINY_RESNET),
    "v3-vit": ModelConfig(version="v3", hidden_dim=32, dim=16, freeze_patch_embed=True, shuffle_bn=False,
                          **TINY_VIT),
}


def views(n=8, size=16):
    return torch.randn(n, 3, size, size), torch.randn(n, 3, size, size)


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_reach_every_query_parameter_and_no_key_parameter(name):
    model = build_model(CONFIGS[name]).train()
    model(*views())["loss"].backward()
    query_side = list(model.encoder.named_parameters()) + list(
        model.predictor.named_parameters() if model.predictor is not None else []
    )
    trainable = [(n, p) for n, p in query_side if p.requires_grad]
    assert trainable, "no trainable parameters"
    missing = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing}"
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_encoder.parameters())


@pytest.mark.parametrize("zero", [0.0, torch.tensor(0.0, dtype=torch.float64)], ids=["float", "tensor"])
def test_momentum_update_happens_before_the_keys_are_computed(zero):
    cfg = ModelConfig(version="v1", queue_size=32, shuffle_bn=False, **TINY_RESNET)
    model = build_model(cfg).train()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the key encoder is now stale
    x, _ = views()
    model(x, x, momentum=zero)  # m = 0: the update copies the query encoder, so keys must equal the queries
    model.end_step()
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.parameters(), model.momentum_encoder.parameters()))
    expected_keys = F.normalize(model.encoder(x), dim=1)  # train-mode BN: depends only on the batch
    torch.testing.assert_close(model.queue.keys[:8], expected_keys.detach())


def test_symmetric_loss_uses_the_old_queue_for_both_terms_and_enqueues_each_key_once():
    cfg = ModelConfig(version="v2", queue_size=40, symmetric=True, shuffle_bn=False, **TINY_RESNET)
    model = build_model(cfg).train()
    reference = copy.deepcopy(model)
    x1, x2 = views()
    loss = model(x1, x2)["loss"]
    model.end_step()

    with torch.no_grad():  # the same step by hand on the copy
        for k, q in zip(reference.momentum_encoder.parameters(), reference.encoder.parameters()):
            k.mul_(cfg.momentum).add_(q, alpha=1 - cfg.momentum)
        q1, q2 = (F.normalize(reference.encoder(x), dim=1) for x in (x1, x2))
        k1, k2 = (F.normalize(reference.momentum_encoder(x), dim=1) for x in (x1, x2))
        old_queue = reference.queue.keys.clone()
    expected = (info_nce_with_queue(q1, k2, old_queue, cfg.temperature)[0]
                + info_nce_with_queue(q2, k1, old_queue, cfg.temperature)[0])
    torch.testing.assert_close(loss.detach(), expected)
    assert int(model.queue.ptr) == 16  # 2N keys, once each
    torch.testing.assert_close(model.queue.keys[:16], torch.cat([k1, k2]))
    torch.testing.assert_close(model.queue.keys[16:], old_queue[16:])


def test_queue_wraps_inside_the_model_for_batches_that_do_not_divide_k():
    model = build_model(ModelConfig(version="v2", queue_size=20, bn_splits=2, **TINY_RESNET)).train()
    for _ in range(3):
        model(*views(n=6))
        model.end_step()
    assert int(model.queue.ptr) == 18 % 20
    model(*views(n=6))
    model.end_step()
    assert int(model.queue.ptr) == 24 % 20


def test_eval_mode_computes_the_loss_without_changing_state():
    model = build_model(CONFIGS["v2-symmetric"])
    model.train()
    model(*views())
    model.end_step()
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(*views())
    assert torch.isfinite(out["loss"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def train_steps(model, optimiser, batches):
    losses = []
    for x1, x2 in batches:
        out = model(x1, x2)
        optimiser.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimiser.step()
        model.end_step()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.parametrize("name", ["v2-symmetric", "v3-resnet"])
def test_a_reloaded_model_continues_identically(name):
    batches = [views() for _ in range(4)]
    model = build_model(CONFIGS[name]).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_steps(model, optimiser, batches[:2])
    saved_model, saved_optim = copy.deepcopy(model.state_dict()), copy.deepcopy(optimiser.state_dict())
    if name.startswith("v2"):
        assert "queue.keys" in saved_model and "queue.ptr" in saved_model
    rng = torch.get_rng_state()
    expected = train_steps(model, optimiser, batches[2:])

    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    restored = build_model(CONFIGS[name]).train()
    restored.load_state_dict(saved_model)
    restored_optim = torch.optim.SGD(restored.parameters(), lr=0.1, momentum=0.9)
    restored_optim.load_state_dict(saved_optim)
    torch.set_rng_state(rng)  # shuffle BN draws permutations from the global RNG
    assert train_steps(restored, restored_optim, batches[2:]) == expected
    for (key, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), key


def test_a_training_step_makes_no_copy_of_the_queue():
    """The loss reads the queue buffer itself; the enqueue writes B rows in place (the old code cloned K×C)."""
    model = build_model(ModelConfig(version="v2", queue_size=37, symmetric=True, bn_splits=2, **TINY_RESNET)).train()
    queue_shape = tuple(model.queue.keys.shape)  # 37×128: no other tensor of the step has this shape

    class FreshQueueSizedTensors(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)]
            if isinstance(out, torch.Tensor) and tuple(out.shape) == queue_shape and \
                    out.untyped_storage().data_ptr() not in inputs:
                self.ops.append(str(func))
            return out

    batches = [views() for _ in range(2)]
    with FreshQueueSizedTensors() as recorder:
        for x1, x2 in batches:
            model(x1, x2)["loss"].backward()
            model.end_step()
    assert recorder.ops == []
    assert int(model.queue.ptr) == 32  # both steps' 2N keys are in


def test_a_backbone_without_batch_statistics_encodes_both_views_in_one_call_with_the_same_result():
    assert not build_model(CONFIGS["v3-resnet"]).views_share_backbone  # BatchNorm: one call per view, as official
    model = build_model(CONFIGS["v3-vit"]).train()
    assert model.views_share_backbone and model.share_backbone_call is None  # None: on GPUs only, where it pays
    separate = copy.deepcopy(model)
    model.share_backbone_call, separate.share_backbone_call = True, False
    calls = {"batched": 0, "separate": 0}
    for name, m in (("batched", model), ("separate", separate)):
        for backbone in (m.encoder.backbone, m.momentum_encoder.backbone):
            backbone.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    x1, x2 = views()
    out = model(x1, x2, momentum=0.9)
    expected = separate(x1, x2, momentum=0.9)
    assert calls == {"batched": 2, "separate": 4}  # query and key encoders: one backbone call each, or one per view
    torch.testing.assert_close(out["loss"], expected["loss"])
    out["loss"].backward()
    expected["loss"].backward()
    for (name, a), b in zip(model.named_parameters(), separate.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


# ---------------------------------------------------------------------------------------------- v3, by hand
# The helpers below are the only places that know how the model is put together (encoder, momentum_encoder,
# predictor attributes); adapt them if the refactor moves these parts.


def _slow_momentum_update(key_encoder, query_encoder, m):
    """θk ← m·θk + (1−m)·θq, one named parameter at a time (the paper's formula, no foreach kernels)."""
    query = dict(query_encoder.named_parameters())
    with torch.no_grad():
        for name, k in key_encoder.named_parameters():
            k.copy_(m * k + (1 - m) * query[name])


def _ctr(q, k, temperature):
    """One direction of the v3 loss as a slow loop: mean over i of −log softmax_j(q_i·k_j / T)[i], times 2T."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = torch.stack([torch.dot(q[i], k[j]) for j in range(k.shape[0])]) / temperature
        total = total - (logits[i] - torch.logsumexp(logits, dim=0))
    return total / q.shape[0] * (2 * temperature)


def _top1(q, k):
    """Share of queries whose most similar key is their own image's (row i ↔ key i)."""
    return ((q @ k.T).argmax(dim=1) == torch.arange(q.shape[0])).double().mean()


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_a_v3_step_equals_the_hand_computed_symmetric_loss_after_the_momentum_update(temperature):
    cfg = ModelConfig(version="v3", hidden_dim=32, dim=16, temperature=temperature, momentum=0.99, shuffle_bn=False,
                      **TINY_RESNET)
    torch.manual_seed(0)
    model = build_model(cfg).double().train()
    with torch.no_grad():  # the key encoder is stale: the momentum update then changes the keys
        for p in model.encoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    reference = copy.deepcopy(model)  # the same weights, BatchNorm buffers included, before the step
    x1, x2 = (x.double() for x in views(n=8))
    m = 0.7
    out = model(x1, x2, momentum=m)

    _slow_momentum_update(reference.momentum_encoder, reference.encoder, m)  # before the keys, as the paper
    # train-mode BatchNorm normalises with the batch's own statistics: each view through each network, as the model
    q1, q2 = (F.normalize(reference.predictor(reference.encoder(x)), dim=1) for x in (x1, x2))
    with torch.no_grad():
        k1, k2 = (F.normalize(reference.momentum_encoder(x), dim=1) for x in (x1, x2))
    expected = _ctr(q1, k2, temperature) + _ctr(q2, k1, temperature)  # each query against the OTHER view's keys

    torch.testing.assert_close(out["loss"], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(out["accuracy"], dtype=torch.float64),
                               (_top1(q1, k2) + _top1(q2, k1)) / 2)
    for (name, a), b in zip(model.momentum_encoder.named_parameters(), reference.momentum_encoder.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    # the gradient reaches the query side only through q: the same as the hand computation's
    out["loss"].backward()
    expected.backward()
    query_side = [*model.encoder.named_parameters(), *model.predictor.named_parameters()]
    reference_side = [*reference.encoder.parameters(), *reference.predictor.parameters()]
    for (name, a), b in zip(query_side, reference_side):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12, msg=name)


def _share_backbone_call_on_cpu(model):
    """Both views through the backbone in one call on the CPU too (by default only on GPUs, where it pays)."""
    model.share_backbone_call = True


def _per_image_features(encoder, x):
    """encoder's backbone on one image at a time: N×D, the reference for any batching of images."""
    backbone = encoder.backbone
    return torch.cat([backbone(x[i : i + 1]) for i in range(x.shape[0])])


def test_views_sharing_one_backbone_call_equal_a_per_image_loop_through_the_backbone():
    model = build_model(CONFIGS["v3-vit"]).double().train()
    _share_backbone_call_on_cpu(model)
    reference = copy.deepcopy(model)
    backbone_batches, head_inputs = [], []
    for encoder in (model.encoder, model.momentum_encoder):
        encoder.backbone.register_forward_hook(lambda _m, args, _out: backbone_batches.append(args[0].shape[0]))
        encoder.head.register_forward_pre_hook(lambda _m, args: head_inputs.append(args[0].detach().clone()))
    x1, x2 = (x.double() for x in views(n=6))
    out = model(x1, x2, momentum=0.9)
    assert backbone_batches == [12, 12]  # one call of both views per encoder: the path under test was taken

    _slow_momentum_update(reference.momentum_encoder, reference.encoder, 0.9)
    with torch.no_grad():
        expected_heads = [_per_image_features(encoder, x) for encoder in (reference.encoder, reference.momentum_encoder)
                          for x in (x1, x2)]  # query view 1, view 2, then key view 1, view 2
    assert len(head_inputs) == 4
    for got, want in zip(head_inputs, expected_heads):  # each view's features reach the head in its own order
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    q1, q2 = (F.normalize(reference.predictor(reference.encoder.head(_per_image_features(reference.encoder, x))),
                          dim=1) for x in (x1, x2))
    with torch.no_grad():
        k1, k2 = (F.normalize(reference.momentum_encoder.head(_per_image_features(reference.momentum_encoder, x)),
                              dim=1) for x in (x1, x2))
    temperature = CONFIGS["v3-vit"].temperature
    expected = _ctr(q1, k2, temperature) + _ctr(q2, k1, temperature)
    torch.testing.assert_close(out["loss"], expected, rtol=1e-9, atol=1e-10)
