"""The baseline of the step benchmark: MoCo written straight from the papers' pseudocode, run eagerly.

MoCo v1/v2: Algorithm 1 of He et al. 2020 (with the symmetric loss of the official CIFAR-10 demo when the config
asks for it); MoCo v3: Algorithm 1 of Chen, Xie, He 2021. It takes its networks from a mocokit model (copies of the
same query encoder, key encoder, predictor and queue), so both sides run the same model; what differs is how the
step is written, in the straightforward way of the reference code:
- the momentum update loops over the parameters in Python (two kernels per tensor);
- the loss reads a clone of the queue, so that the in-place enqueue cannot disturb autograd;
- each view goes through each encoder in its own call;
- no torch.compile, default (NCHW) memory format.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class PlainMoCo(nn.Module):
    def __init__(self, moco: nn.Module) -> None:
        """moco: a mocokit MoCo whose networks, queue and settings are copied."""
        super().__init__()
        self.f_q = copy.deepcopy(moco.encoder)  # backbone + head
        self.f_k = copy.deepcopy(moco.momentum_encoder)
        self.predictor = copy.deepcopy(moco.predictor)  # v3 only
        self.T = moco.temperature
        self.symmetric = moco.symmetric
        self.shuffle_bn = moco.shuffle_bn
        if moco.dictionary.name == "queue":
            self.register_buffer("queue", moco.queue.keys.clone())  # K×C
            self.ptr = int(moco.queue.ptr)
        else:
            self.queue = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, momentum: float) -> dict[str, torch.Tensor]:
        if self.queue is not None:
            return self._v2(x1, x2, momentum)
        return self._v3(x1, x2, momentum)

    @torch.no_grad()
    def _momentum_update(self, m: float) -> None:
        for param_q, param_k in zip(self.f_q.parameters(), self.f_k.parameters()):
            param_k.data = param_k.data * m + param_q.data * (1.0 - m)

    @torch.no_grad()
    def _key(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shuffle_bn:
            return F.normalize(self.f_k(x), dim=1)
        idx_shuffle = torch.randperm(x.shape[0], device=x.device)  # shuffle BN on one device, as the CIFAR demo
        k = F.normalize(self.f_k(x[idx_shuffle]), dim=1)
        return k[torch.argsort(idx_shuffle)]

    def _contrastive(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N×1
        l_neg = torch.einsum("nc,kc->nk", q, queue)  # N×K
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)

    def _v2(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> dict[str, torch.Tensor]:
        q1 = F.normalize(self.f_q(x1), dim=1)
        with torch.no_grad():
            self._momentum_update(m)
            k2 = self._key(x2)
        queue = self.queue.clone().detach()
        loss = self._contrastive(q1, k2, queue)
        keys = k2
        if self.symmetric:
            q2 = F.normalize(self.f_q(x2), dim=1)
            k1 = self._key(x1)
            loss = loss + self._contrastive(q2, k1, queue)
            keys = torch.cat([k1, k2])
        self._enqueue(keys)
        return {"loss": loss}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size, batch = self.queue.shape[0], keys.shape[0]
        assert size % batch == 0, "the reference code asserts K % batch == 0"
        self.queue[self.ptr : self.ptr + batch] = keys
        self.ptr = (self.ptr + batch) % size

    def _v3(self, x1: torch.Tensor, x2: torch.Tensor, m: float) -> dict[str, torch.Tensor]:
        q1 = self.predictor(self.f_q(x1))
        q2 = self.predictor(self.f_q(x2))
        with torch.no_grad():
            self._momentum_update(m)
            k1 = self.f_k(x1)
            k2 = self.f_k(x2)
        return {"loss": self._ctr(q1, k2) + self._ctr(q2, k1)}

    def _ctr(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.T / self.T
        labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels) * (2 * self.T)


def plain_step(model: PlainMoCo, optimizer: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor,
               momentum: float) -> torch.Tensor:
    """One training step of the baseline, as a reference training loop writes it; returns the loss."""
    loss = model(x1, x2, momentum)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()
