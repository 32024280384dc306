"""Hostile dataset folders: random bytes, empty files, decompression bombs, symbolic link loops and unreadable files
or folders are skipped (each named in a warning) or refused with a clear message; nothing crashes or hangs."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mocokit.data import DataConfig, DataError, UnreadableImageWarning, build_pretrain_dataset
from mocokit.data.imagefile import UnreadableImage, decode_rgb
from mocokit.data.sources import FolderFiles, SkippedFolderWarning


def write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    """A small PNG of random pixels (the dataset tests' fixtures write the same kind of file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def cfg_for(path: Path, **overrides) -> DataConfig:
    values = {"path": str(path), "recipe": "v2-small", "image_size": 32, "num_workers": 0,
              "max_bad_fraction": 0.5} | overrides
    return DataConfig(**values)


def encoded(fmt: str, size=(8, 6), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 90).save(buffer, format=fmt)
    return buffer.getvalue()


VALID = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")}


@st.composite
def hostile_bytes(draw) -> bytes:
    """Random bytes, a real image's header followed by random bytes, or a real image truncated or with bytes
    overwritten."""
    kind = draw(st.sampled_from(["random", "header", "truncated", "mutated"]))
    original = VALID[draw(st.sampled_from(sorted(VALID)))]
    if kind == "random":
        return draw(st.binary(max_size=512))
    if kind == "header":
        return original[: draw(st.integers(0, 32))] + draw(st.binary(max_size=512))
    if kind == "truncated":
        return original[: draw(st.integers(0, len(original) - 1))]
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile_bytes())
def test_any_bytes_decode_to_an_rgb_image_or_raise_unreadable_image(data):
    try:
        image = decode_rgb(data)
    except UnreadableImage:
        return
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A 1-bit PNG of width x height black pixels: a few kB on disk, width·height pixels once decoded. With `rows`,
    only that many rows of pixel data follow the header (a file that lies about its size)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    pixels += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_it_is_decoded():
    bomb = png_bomb(9500, 9500)  # 90 million pixels: just over PIL's limit, where PIL itself only warns
    with pytest.warns(Image.DecompressionBombWarning):  # PIL's own check: a warning only, at this size
        assert len(bomb) < 100_000 and Image.open(io.BytesIO(bomb)).size == (9500, 9500)
    with pytest.raises(UnreadableImage, match="9500x9500 pixels is more than PIL.Image.MAX_IMAGE_PIXELS"):
        decode_rgb(bomb)
    header_only = png_bomb(100_000, 100_000, rows=1)
    with pytest.raises(UnreadableImage, match="(DecompressionBombError|pixels is more than)"):
        decode_rgb(header_only)  # 10^10 pixels announced: PIL refuses at open


def test_the_pixel_limit_is_pil_s_and_can_be_raised(monkeypatch):
    image = encoded("PNG", size=(120, 100))  # 12,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 1.2x the limit: PIL alone would only warn
    with pytest.raises(UnreadableImage, match="120x100 pixels"):
        decode_rgb(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert decode_rgb(image).size == (120, 100)


@pytest.mark.parametrize("in_memory", [False, True, None])
def test_garbage_empty_and_bomb_files_in_a_folder_are_skipped_and_named(tmp_path, in_memory):
    root = tmp_path / "data"
    for i in range(6):
        write_image(root / f"good{i}.png", (32, 32), seed=i)
    (root / "empty.jpg").write_bytes(b"")
    (root / "random.png").write_bytes(os.urandom(700))
    (root / "bomb.png").write_bytes(png_bomb(9500, 9500))
    with pytest.warns(UnreadableImageWarning) as caught:
        dataset = build_pretrain_dataset(cfg_for(root, in_memory=in_memory))
        items = [dataset[i] for i in range(len(dataset))]
        dataset.report_unreadable()
    messages = " ".join(str(w.message) for w in caught)
    for name in ("empty.jpg", "random.png", "bomb.png"):
        assert name in messages
    assert "3 of 9 images" in messages
    assert {dataset.paths[index] for _, _, index in items} == {f"good{i}.png" for i in range(6)}


def test_too_many_bad_files_is_a_clear_error(tmp_path):
    root = tmp_path / "data"
    write_image(root / "good.png", (32, 32))
    for i in range(3):
        (root / f"bad{i}.jpg").write_bytes(os.urandom(100))
    with pytest.warns(UnreadableImageWarning), pytest.raises(DataError, match="3 of 4 images .* unreadable"):
        build_pretrain_dataset(cfg_for(root, in_memory=True))


def test_symbolic_link_loops_are_skipped_and_images_listed_once(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "cats" / "deep" / f"{i}.png", (32, 32), seed=i)
    (root / "cats" / "deep" / "up").symlink_to("..")  # a loop: without care, listed again at every depth
    (root / "cats" / "deep" / "top").symlink_to("../..")  # a second loop: the walk would grow exponentially
    (root / "cats" / "self.png").symlink_to("self.png")  # a link to itself: unreadable
    (root / "cats" / "gone.png").symlink_to("nowhere.png")  # a dangling link: unreadable
    with pytest.warns(SkippedFolderWarning, match="symbolic link loop"):
        dataset = build_pretrain_dataset(cfg_for(root, in_memory=False))
    assert sorted(dataset.paths) == ["cats/deep/0.png", "cats/deep/1.png", "cats/deep/2.png", "cats/deep/3.png",
                                     "cats/gone.png", "cats/self.png"]
    with pytest.warns(UnreadableImageWarning) as caught:
        indices = [dataset[i][2] for i in range(len(dataset))]
    assert {dataset.paths[i] for i in indices} == {f"cats/deep/{i}.png" for i in range(4)}
    assert "self.png" in str(caught[0].message) + str(caught[-1].message)


def test_a_folder_link_outside_the_dataset_is_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "a.png", (32, 32))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(elsewhere)
    assert build_pretrain_dataset(cfg_for(tmp_path / "data")).paths == ["linked/a.png"]


def permission_denied_tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "open" / f"{i}.png", (32, 32), seed=i)
    write_image(root / "open" / "secret.png", (32, 32))
    write_image(root / "closed" / "hidden.png", (32, 32))
    return root


def check_denied(root: Path) -> None:
    with pytest.warns(SkippedFolderWarning, match=r"closed: it cannot be listed \(Permission denied\)"):
        dataset = build_pretrain_dataset(cfg_for(root, in_memory=False, labels="none"))
    assert "closed/hidden.png" not in dataset.paths
    with pytest.warns(UnreadableImageWarning, match="secret.png.*Permission denied"):
        indices = [dataset[i][2] for i in range(len(dataset))]
    assert {dataset.paths[i] for i in indices} == {f"open/{i}.png" for i in range(4)}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions: see the simulated test")
def test_unreadable_files_and_folders_are_skipped(tmp_path):
    root = permission_denied_tree(tmp_path)
    (root / "open" / "secret.png").chmod(0)
    (root / "closed").chmod(0)
    try:
        check_denied(root)
    finally:
        (root / "closed").chmod(0o755)


def test_unreadable_files_and_folders_are_skipped_simulated(tmp_path, monkeypatch):
    """What a non-root user sees with chmod 000, simulated so that it also runs as root."""
    root = permission_denied_tree(tmp_path)
    real_scandir, real_read = os.scandir, FolderFiles.__call__

    def scandir(path="."):
        if Path(path).name == "closed":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def read(self, relative):
        if relative.endswith("secret.png"):
            raise PermissionError(13, "Permission denied", relative)
        return real_read(self, relative)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(FolderFiles, "__call__", read)
    check_denied(root)
