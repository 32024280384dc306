"""Augmented views per second: the per-image backend (torchvision in DataLoader workers) against the batched one.

    python benchmarks/bench_data.py                 # CIFAR-10 JPEGs from ../shared/data, 32 px and 224 px
    python benchmarks/bench_data.py --n224 512 --device cuda

Both backends run on the same images, with the same number of DataLoader workers (default: the core count):
- 32 px: CIFAR-10 train JPEGs as they are (recipe v2-small);
- 224 px: the same images upscaled to 300 x 300 JPEGs in a temporary folder (recipe v2, with blur).
Two measurements per size:
- end_to_end: from JPEG files on disk to normalised views (decoding included; the batched backend decodes and
  resizes in workers, then augments the uint8 batch on --device in the main process);
- augment_only: images already decoded in memory (in-memory mode), so only the augmentation is timed.
Numbers are printed and written to benchmarks/out/bench_data.json (git-ignored).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mocokit.data import DataConfig, build_batch_augment, build_pretrain_dataset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def write_images(folder: Path, n: int, archive: Path, upscale_to: int | None) -> None:
    """n CIFAR-10 train JPEGs into folder/<class>/ (random images when the archive is absent)."""
    written = 0
    if archive.is_file():
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if written == n:
                    break
                if not member.isfile() or "/train/" not in member.name:
                    continue
                data = tar.extractfile(member).read()
                class_name = member.name.split("/")[-2]
                _save(folder / class_name / f"{written:06d}.jpg", data, upscale_to)
                written += 1
    rng = np.random.default_rng(0)
    while written < n:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "JPEG")
        _save(folder / "random" / f"{written:06d}.jpg", buffer.getvalue(), upscale_to)
        written += 1


def _save(path: Path, data: bytes, upscale_to: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if upscale_to is None:
        path.write_bytes(data)
    else:
        Image.open(io.BytesIO(data)).convert("RGB").resize((upscale_to, upscale_to), Image.BICUBIC).save(
            path, "JPEG", quality=90
        )


def time_per_image(cfg: DataConfig, batch_size: int, epochs: int) -> float:
    """Views per second of the per-image backend: DataLoader workers make both views of every image."""
    loader = DataLoader(
        build_pretrain_dataset(cfg),
        batch_size=batch_size,
        num_workers=cfg.num_workers,
        shuffle=True,
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
    )
    next(iter(loader))  # start the workers
    views, start = 0, time.perf_counter()
    for _ in range(epochs):
        for (first, _second), _, _ in loader:
            views += 2 * len(first)
    return views / (time.perf_counter() - start)


def time_batched(cfg: DataConfig, batch_size: int, epochs: int, device: torch.device) -> float:
    """Views per second of the batched backend: workers deliver uint8 batches, the device augments them."""
    augment = build_batch_augment(cfg, device)
    loader = DataLoader(
        build_pretrain_dataset(cfg),
        batch_size=batch_size,
        num_workers=cfg.num_workers,
        shuffle=True,
        drop_last=True,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    augment(next(iter(loader))[0].to(device))  # warm up workers and kernels
    views, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _, _ in loader:
            first, second = augment(images.to(device, non_blocking=True))
            views += len(first) + len(second)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return views / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--n32", type=int, default=4096, help="images at 32 px")
    parser.add_argument("--n224", type=int, default=256, help="images at 224 px")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "bench_data.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)

    results: dict = {
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "sizes": {},
    }
    settings = [(32, "v2-small", args.n32, 256, 2, None), (224, "v2", args.n224, 64, 1, 300)]
    with tempfile.TemporaryDirectory() as tmp:
        for size, recipe, n, batch, epochs, upscale in settings:
            folder = Path(tmp) / f"images{size}"
            write_images(folder, n, args.archive, upscale)
            row = {"recipe": recipe, "images": n, "batch": batch, "source_side": upscale or 32}
            for mode, in_memory in (("end_to_end", False), ("augment_only", True)):
                base = {
                    "path": str(folder),
                    "recipe": recipe,
                    "image_size": size,
                    "num_workers": args.workers,
                    "in_memory": in_memory,
                    "root": str(Path(tmp) / "cache"),
                }
                per_image = time_per_image(DataConfig(**base), batch, epochs)
                batched = time_batched(DataConfig(**base, augment="batched"), batch, epochs, device)
                row[mode] = {
                    "per_image_views_per_s": round(per_image, 1),
                    "batched_views_per_s": round(batched, 1),
                    "speedup": round(batched / per_image, 2),
                }
                print(
                    f"{size:>4} px {mode:<13} per-image {per_image:8.1f} views/s   batched {batched:8.1f} views/s"
                    f"   x{batched / per_image:.2f}   ({cores} cores, {args.workers} workers, {results['device']})",
                    flush=True,
                )
            results["sizes"][str(size)] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
