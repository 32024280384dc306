"""Few-label subsets: a stratified, seeded share of the labelled images, as in the semi-supervised protocols
(1% and 10% of the ImageNet labels in SimCLR / MoCo v2 / BYOL evaluations)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def stratified_indices(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices of a stratified share `fraction` of the items with these labels, sorted.

    Promises: each class c with n_c items contributes max(1, round(fraction * n_c)) of them (so every class is
    present, and the class proportions are those of the full set up to rounding); the choice within a class is a
    seeded permutation, so the same (labels, fraction, seed) always gives the same indices, and a class's items are
    independent of the other classes' counts. Items labelled -1 (unlabelled) are never chosen. fraction=1 gives every
    labelled item."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        if label >= 0:
            by_class.setdefault(int(label), []).append(index)
    chosen: list[int] = []
    for label, members in sorted(by_class.items()):
        # One generator per class, seeded by (seed, class): a class's pick does not depend on the other classes.
        generator = torch.Generator().manual_seed(seed * 1_000_003 + label)
        keep = max(1, round(fraction * len(members)))
        order = torch.randperm(len(members), generator=generator)[:keep]
        chosen.extend(members[i] for i in order.tolist())
    return sorted(chosen)
