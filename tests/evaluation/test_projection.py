"""2-D maps: PCA against its closed form, t-SNE determinism, and the missing-package message."""

import importlib.util
import re

import numpy as np
import pytest

from mocokit.evaluation.projection import (
    MissingPackageError,
    ProjectionFallbackWarning,
    project_2d,
    resolve_method,
)


def two_clusters(n: int = 30, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return rng.normal(0, 0.1, (n, dim)) + 5.0 * labels[:, None] * np.eye(dim)[0], labels


def test_pca_puts_the_largest_variance_on_the_first_axis():
    features, labels = two_clusters()
    coords = project_2d(features, "pca")
    assert coords.shape == (30, 2) and coords.dtype == np.float32
    assert abs(coords[labels == 0, 0].mean() - coords[labels == 1, 0].mean()) == pytest.approx(5.0, abs=0.1)
    np.testing.assert_allclose(coords.mean(axis=0), 0, atol=1e-5)  # centred
    assert project_2d(features[:, :1], "pca").shape == (30, 2)  # fewer than 2 dimensions: padded


def test_tsne_is_deterministic_for_a_seed_and_separates_clusters():
    pytest.importorskip("sklearn", reason="scikit-learn is a dependency of mocokit, but not installed here")
    features, labels = two_clusters()
    first, again = project_2d(features, "tsne", seed=1), project_2d(features, "tsne", seed=1)
    assert first.shape == (30, 2) and np.array_equal(first, again)
    centre_gap = np.linalg.norm(first[labels == 0].mean(0) - first[labels == 1].mean(0))
    assert centre_gap > 3 * first[labels == 0].std(0).max()


def test_methods_resolve_or_name_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sklearn", "umap") else real_find_spec(name, *a))
    assert resolve_method("pca") == "pca"
    with pytest.warns(ProjectionFallbackWarning, match="the map is a PCA: t-SNE needs scikit-learn"):
        assert resolve_method("auto") == "pca"  # neither umap nor scikit-learn: PCA, and a note that says so
    with pytest.raises(MissingPackageError, match="pip install scikit-learn"):
        resolve_method("tsne")
    with pytest.raises(MissingPackageError, match="pip install umap-learn"):
        resolve_method("umap")
    with pytest.raises(ValueError, match="choose one of"):
        resolve_method("mds")
    with pytest.raises(ValueError, match="at least 3"):
        project_2d(np.zeros((2, 4)), "pca")


def test_the_readmes_t_sne_map_needs_no_extra():
    """`make install` installs mocokit's dependencies: scikit-learn (t-SNE, the README's `--plot demo-tsne.png`)
    must be one of them, not an extra."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"scikit-learn\b", requirement) for requirement in project["dependencies"])
    assert importlib.util.find_spec("sklearn") is not None
