"""2-D maps of features: t-SNE (scikit-learn), UMAP (umap-learn) or PCA, as pure functions over arrays."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from mocokit.errors import ConfigError

METHODS = ("auto", "tsne", "umap", "pca")
# method: (module, what to pip install). scikit-learn is a dependency of mocokit, so t-SNE is there after any
# install; umap-learn is not (it pulls numba and llvmlite).
_PACKAGES = {"tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}


class MissingPackageError(ConfigError):
    """A chosen method needs a package that is not installed; the message names the pip command."""


class ProjectionFallbackWarning(UserWarning):
    """`auto` found neither umap-learn nor scikit-learn and drew a PCA map instead."""


def resolve_method(method: str) -> str:
    """`auto` -> umap when umap-learn is importable, else tsne (scikit-learn, a dependency of mocokit), else pca with
    a ProjectionFallbackWarning that says so; a method named explicitly must have its package installed
    (MissingPackageError naming the pip command otherwise), so a command can fail before extracting features."""
    if method not in METHODS:
        raise ConfigError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "auto":
        found = [m for m in ("umap", "tsne") if importlib.util.find_spec(_PACKAGES[m][0]) is not None]
        if not found:
            warnings.warn("the map is a PCA: t-SNE needs scikit-learn, which is not installed in this environment "
                          "(pip install scikit-learn, or reinstall mocokit)", ProjectionFallbackWarning, stacklevel=2)
        return found[0] if found else "pca"
    if method in _PACKAGES:
        module, pip_name = _PACKAGES[method]
        if importlib.util.find_spec(module) is None:
            raise MissingPackageError(
                f"--method {method} needs a package that is not installed: pip install {pip_name}; "
                "--method pca needs nothing extra"
            )
    return method


def project_2d(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """features N×D -> coordinates N×2 (float32) with `method` (tsne, umap or pca; resolve `auto` first).
    Deterministic for a given seed."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"a 2-D map needs at least 3 feature rows N×D, got shape {x.shape}")
    if method == "pca":
        centred = x - x.mean(axis=0, keepdims=True)
        _, _, components = np.linalg.svd(centred, full_matrices=False)  # rows: principal directions
        coords = centred @ components[:2].T  # N×2 (N×1 when D == 1)
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (x.shape[0] - 1) / 3)  # scikit-learn requires perplexity < N
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    raise ValueError(f"unknown projection method {method!r}; resolve 'auto' with resolve_method first")
