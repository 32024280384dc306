from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image_folder(root: Path, classes: int, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """root/{train,test}/<class>/<n>.png with class-dependent colours, so that a few steps can learn something."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", max(per_class // 4, 2))):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, size=3)
            for n in range(count):
                pixels = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"), classes=3, per_class=24)
