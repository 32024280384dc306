"""The label-free health metrics against closed forms and slow float64 references written from the papers."""

import math

import numpy as np
import pytest
import torch

from mocokit.health import RANKME_EPS, alignment, effective_rank, mean_dimension_std, uniformity


def _with_spectrum(singular: np.ndarray, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A rows×cols float64 matrix U·diag(singular)·Vᵀ with random orthonormal U, V: its singular values are known."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, len(singular))))
    v, _ = np.linalg.qr(rng.normal(size=(cols, len(singular))))
    return torch.from_numpy(u @ np.diag(singular) @ v.T)


def _rankme_loop(singular: list[float], eps: float = RANKME_EPS) -> float:
    """RankMe from the paper, one singular value at a time, in Python floats (float64)."""
    total = sum(singular)
    entropy = 0.0
    for sigma in singular:
        p = sigma / total + eps
        entropy -= p * math.log(p)
    return math.exp(entropy)


@pytest.mark.parametrize("k", [1, 2, 7, 32])
def test_k_equal_singular_values_have_effective_rank_k(k):
    features = _with_spectrum(np.full(k, 3.0), rows=64, cols=48, seed=k)
    # exact up to ε: the min(N, D) − k zero singular values each add ε·log(1/ε)
    assert effective_rank(features).item() == pytest.approx(k, rel=1e-4)
    assert effective_rank(features.float()).item() == pytest.approx(k, rel=1e-3)  # float32 input


@pytest.mark.parametrize("rows,cols,seed", [(200, 30, 0), (50, 80, 1), (128, 128, 2)])
def test_effective_rank_of_a_random_spectrum_matches_a_slow_loop(rows, cols, seed):
    rank = min(rows, cols)
    singular = np.sort(np.random.default_rng(seed).exponential(size=rank))[::-1]
    features = _with_spectrum(singular, rows, cols, seed)
    padded = list(singular) + [0.0] * (min(rows, cols) - rank)
    assert effective_rank(features).item() == pytest.approx(_rankme_loop(padded), rel=1e-6)


def test_constant_features_have_effective_rank_one():
    constant = torch.randn(1, 40).expand(100, 40)  # every image the same feature: collapse
    assert effective_rank(constant).item() == pytest.approx(1.0, rel=1e-3)
    healthy = torch.randn(100, 40, generator=torch.Generator().manual_seed(0))
    assert effective_rank(healthy).item() > 25  # a Gaussian cloud: close to the 40 dimensions


def test_alignment_of_identical_and_known_pairs():
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    assert alignment(z, 5 * z).item() == pytest.approx(0.0, abs=1e-6)  # same direction: the norm does not count
    assert alignment(z, -z).item() == pytest.approx(4.0, rel=1e-6)  # antipodal: ‖2ẑ‖² = 4
    assert alignment(z, -z, alpha=1).item() == pytest.approx(2.0, rel=1e-6)
    e1, e2 = torch.eye(2)[:1], torch.eye(2)[1:]  # orthogonal unit vectors: ‖e1 − e2‖ = √2
    assert alignment(e1, e2).item() == pytest.approx(2.0, rel=1e-6)
    assert alignment(e1, e2, alpha=3).item() == pytest.approx(2 ** 1.5, rel=1e-6)
    # the mean over pairs: half identical (0), half orthogonal (2)
    assert alignment(torch.cat([e1, e1]), torch.cat([e1, e2])).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_of_two_antipodal_points_is_minus_4t(t):
    points = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])  # ‖ẑ1 − ẑ2‖² = 4
    assert uniformity(points, t=t).item() == pytest.approx(-4 * t, rel=1e-6)


def test_uniformity_of_collapsed_points_is_zero():
    assert uniformity(torch.ones(10, 8)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_on_the_circle_matches_the_bessel_closed_form(t):
    # For θ uniform on the circle, ‖x − y‖² = 2 − 2cos θ and E exp(−t‖x − y‖²) = e^(−2t)·I₀(2t).
    # N equally spaced points: the mean over j ≠ i of that periodic function is (N·E − 1)/(N − 1) up to the
    # trapezoid rule's error, which is exponentially small in N.
    expected_mean = math.exp(-2 * t) * float(np.i0(2 * t))
    n = 64
    angles = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert uniformity(circle, t=t).item() == pytest.approx(math.log((n * expected_mean - 1) / (n - 1)), rel=1e-9)
    # and random points: the large-sample value, within a few standard errors of a mean over ~2·10⁶ pairs
    random_angles = torch.rand(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 * math.pi
    random_circle = torch.stack([random_angles.cos(), random_angles.sin()], dim=1)
    assert uniformity(random_circle, t=t).item() == pytest.approx(math.log(expected_mean), abs=0.03)


def test_mean_dimension_std_of_constant_and_random_unit_vectors():
    assert mean_dimension_std(torch.randn(1, 64).expand(500, 64)).item() == pytest.approx(0.0, abs=1e-6)
    n = 4096
    for d in (8, 64, 256):
        z = torch.randn(n, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64) * 3.0
        # each coordinate of a uniform unit vector has mean 0 and variance 1/d; the sample std's relative error is
        # about 1/√(2n) per dimension, less after averaging over d dimensions: 4/√(2n) ≈ 4.4% is a safe bound
        assert mean_dimension_std(z).item() == pytest.approx(1 / math.sqrt(d), rel=4 / math.sqrt(2 * n))


def test_collapse_is_visible_in_every_metric():
    generator = torch.Generator().manual_seed(0)
    healthy = torch.randn(256, 32, generator=generator)
    collapsed = torch.randn(1, 32, generator=generator).expand(256, 32) + 1e-4 * torch.randn(256, 32,
                                                                                             generator=generator)
    assert effective_rank(collapsed) < 0.1 * effective_rank(healthy)
    assert mean_dimension_std(collapsed) < 0.01 * mean_dimension_std(healthy)
    assert uniformity(collapsed) > -1e-3 > uniformity(healthy)
