"""The real CIFAR-10 JPEG archive of the project (../shared/data), read without unpacking it."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from mocokit.data import (
    DataConfig,
    available_splits,
    build_batch_augment,
    build_eval_dataset,
    build_pretrain_dataset,
)

ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"real CIFAR-10 archive not found at {ARCHIVE}"),
]


def test_cifar10_archive_splits_classes_and_both_backends(tmp_path: Path) -> None:
    cfg = DataConfig(path=str(ARCHIVE), root=str(tmp_path), recipe="v2-small", image_size=32, num_workers=2)
    assert available_splits(cfg) == ["train", "test"]
    test = build_eval_dataset(cfg, "test")
    assert len(test) == 10_000 and len(test.classes) == 10 and "in memory" in test.where
    assert set(Counter(test.labels).values()) == {1000}
    image, label = test[1234]
    assert image.shape == (3, 32, 32) and test.classes[label] in test.paths[1234]

    batched = build_pretrain_dataset(DataConfig(**{**cfg.__dict__, "augment": "batched"}), "test")
    batch = torch.stack([batched[i][0] for i in range(16)])
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.uint8  # CIFAR's own size, no resize
    first, _ = build_batch_augment(cfg)(batch)
    assert first.shape == (16, 3, 32, 32) and abs(float(first.mean())) < 1.0
