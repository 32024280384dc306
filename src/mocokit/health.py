"""Label-free health metrics of an encoder: pure tensor functions over features and embeddings.

- `effective_rank`: RankMe (Garrido et al., "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank", 2023) of backbone features;
- `alignment` and `uniformity`: Wang & Isola, "Understanding contrastive representation learning through alignment
  and uniformity on the hypersphere" (2020), of L2-normalised embeddings;
- `mean_dimension_std`: the mean per-dimension standard deviation of L2-normalised embeddings (the collapse check of
  SimSiam, Chen & He 2021, §4): about 1/√d for embeddings spread over the sphere, 0 when they collapse to a point.

Each returns a 0-dim float tensor on the input's device, computed in float32 or better whatever the input's dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RANKME_EPS = 1e-7  # RankMe's ε, added to each normalised singular value so that log p is defined


def effective_rank(features: torch.Tensor, eps: float = RANKME_EPS) -> torch.Tensor:
    """RankMe of `features` (N×D): exp(−Σ_k p_k log p_k) with p_k = σ_k / Σ_j σ_j + ε over the min(N, D) singular
    values σ_k. Between about 1 (a rank-one matrix, e.g. every row the same) and min(N, D); k equal non-zero singular
    values give k. An all-zero matrix gives about 1 as well (its p_k are all ε)."""
    singular = torch.linalg.svdvals(features.to(torch.promote_types(features.dtype, torch.float32)))  # min(N,D)
    p = singular / singular.sum().clamp_min(torch.finfo(singular.dtype).tiny) + eps  # min(N,D), sums to ~1
    return torch.exp(-(p * torch.log(p)).sum())


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """E_i ‖ẑ1_i − ẑ2_i‖^α over the N positive pairs (z1, z2: N×C, the two views of N images; ẑ = z/‖z‖). 0 when
    the views' embeddings coincide, 2^α when they are antipodal; lower is better."""
    z1, z2 = _unit(z1), _unit(z2)  # N×C each
    return (z1 - z2).norm(dim=1).pow(alpha).mean()


def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log E_{i≠j} exp(−t ‖ẑ_i − ẑ_j‖²) over the N(N−1)/2 pairs of distinct rows of z (N×C, N ≥ 2). 0 when all
    embeddings coincide (collapse); more negative is more uniform: −4t for two antipodal points, and
    −2t + log I₀(2t) for points spread uniformly on a circle."""
    squared = torch.pdist(_unit(z), p=2).pow(2)  # N(N−1)/2 pairwise squared distances
    # log-mean-exp, stable when every exp(−t d²) underflows
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())


def mean_dimension_std(z: torch.Tensor) -> torch.Tensor:
    """The standard deviation of each of the C dimensions of the unit embeddings ẑ over the N rows of z (N×C),
    averaged over the dimensions: about 1/√C for embeddings spread over the sphere, 0 when all rows are equal."""
    return _unit(z).std(dim=0, correction=0).mean()  # C per-dimension stds -> their mean


def _unit(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)
