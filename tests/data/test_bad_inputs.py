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
import torch
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


# ------------------------------------------------------------------ users' folders: sizes and modes (issue 14)


@pytest.fixture(scope="module")
def huge_jpeg() -> bytes:
    """A 10,000 x 10,000 grayscale JPEG (100 million pixels, over PIL's 89-million limit; 1.2 MB on disk)."""
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((10_000, 10_000)).save(buffer, format="JPEG", quality=30)
    return buffer.getvalue()


def test_a_huge_jpeg_is_decoded_scaled_down_while_decoding_not_refused(huge_jpeg):
    image = decode_rgb(huge_jpeg, min_side=128)  # 1/8 while decoding: 1,250 px a side, 64x fewer pixels
    assert image.mode == "RGB" and image.size == (1250, 1250)
    pixels = np.asarray(image)[::125, 625, 0].astype(int)  # the gradient survives the scaling: rows go dark to light
    assert pixels[0] < 20 and pixels[-1] > 200 and (np.diff(pixels) > 0).all()
    assert decode_rgb(huge_jpeg, min_side=2000).size == (2500, 2500)  # the smallest scale keeping both sides >= 2000
    with pytest.raises(UnreadableImage, match="10000x10000 pixels is more than .* save it as JPEG"):
        decode_rgb(huge_jpeg)  # at full size it would be a decompression bomb: refused, saying what to do
    small = encoded("JPEG", size=(300, 200))
    assert np.array_equal(np.asarray(decode_rgb(small, min_side=128)), np.asarray(decode_rgb(small)))  # < 2x: as is


def test_the_memory_estimate_counts_a_huge_jpeg_at_the_size_it_is_decoded_to(tmp_path, huge_jpeg):
    from mocokit.data.memory import estimate_decoded_bytes
    from mocokit.data.sources import open_source

    root = tmp_path / "data"
    write_image(root / "small.png", (32, 32))
    (root / "huge.jpg").write_bytes(huge_jpeg)
    source = open_source(cfg_for(root), "train")
    decoded = sum(np.asarray(source.read(i)).nbytes for i in range(len(source)))
    assert estimate_decoded_bytes(source) == decoded == (1250 * 1250 + 32 * 32) * 3  # not 300 MB at full size


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_folder_with_a_huge_jpeg_trains_and_a_huge_png_is_skipped_in_one_line(tmp_path, huge_jpeg, in_memory):
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / f"good{i}.png", (32, 32), seed=i)
    (root / "huge.jpg").write_bytes(huge_jpeg)
    (root / "huge.png").write_bytes(png_bomb(10_000, 10_000))  # no JPEG: it would be decoded at full size
    with pytest.warns(UnreadableImageWarning) as caught:
        dataset = build_pretrain_dataset(cfg_for(root, in_memory=in_memory))
        items = [dataset[i] for i in range(len(dataset))]
    assert {dataset.paths[index] for _, _, index in items} == {"huge.jpg", *(f"good{i}.png" for i in range(4))}
    (first, _), _, _ = items[dataset.paths.index("huge.jpg")]
    assert first.shape == (3, 32, 32)
    skipped = [str(w.message) for w in caught if "huge.png" in str(w.message)]
    assert len(skipped) == 1 and "\n" not in skipped[0] and "shrink the file or save it as JPEG" in skipped[0]


def odd_images(root: Path) -> dict[str, Image.Image]:
    """The kinds of file users' folders hold, beside a plain RGB one: modes, bit depths, sizes and aspects."""
    rng = np.random.default_rng(0)
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 200, 30, 90] + [0, 0, 0] * 254)
    palette.info["transparency"] = 0
    images = {
        "rgb.png": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        "gray.png": Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)),  # L
        "gray-alpha.png": Image.new("LA", (33, 17), (120, 200)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (50, 20, 4), dtype=np.uint8), mode="RGBA"),
        "palette.png": palette,
        "sixteen-bit.png": Image.fromarray(rng.integers(0, 65536, (36, 36), dtype=np.uint16)),  # I;16
        "eight.png": Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
        "one.png": Image.new("RGB", (1, 1), (10, 200, 30)),
        "strip.png": Image.fromarray(rng.integers(0, 256, (6, 300, 3), dtype=np.uint8)),
        "cmyk.jpg": Image.new("CMYK", (40, 40), (0, 255, 255, 0)),
    }
    for name, image in images.items():
        image.save(root / name)
    return images


@pytest.mark.parametrize(("augment", "in_memory"), [("per_image", False), ("batched", False), ("batched", True)])
def test_every_mode_size_and_aspect_users_have_becomes_two_views_without_a_warning(tmp_path, augment, in_memory):
    import warnings

    from mocokit.data import build_batch_augment

    root = tmp_path / "data"
    root.mkdir()
    names = odd_images(root)
    assert Image.open(root / "sixteen-bit.png").mode in ("I;16", "I")  # what PIL reports for a 16-bit PNG
    cfg = cfg_for(root, augment=augment, in_memory=in_memory, max_bad_fraction=0.0)  # no file may be skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one warning: every file is read as it is
        dataset = build_pretrain_dataset(cfg)
        items = [dataset[i] for i in range(len(dataset))]
        assert dataset.report_unreadable() == 0
    assert sorted(dataset.paths) == sorted(names) and [index for _, _, index in items] == list(range(len(names)))
    if augment == "batched":
        batch = torch.stack([views for views, _, _ in items])
        views = build_batch_augment(cfg)(batch, generator=torch.Generator().manual_seed(0))
    else:
        views = tuple(torch.stack([pair[v] for pair, _, _ in items]) for v in (0, 1))
    sixteen = dataset.paths.index("sixteen-bit.png")
    for view in views:
        assert view.shape == (len(names), 3, 32, 32) and torch.isfinite(view).all()
        # 16-bit values scaled, not clipped to one value (a constant image stays constant under every operation)
        assert view[sixteen].std() > 0.1


def test_a_dataset_smaller_than_one_batch_is_refused_in_one_line_naming_the_key(tmp_path, capsys):
    from mocokit.cli import main

    root = tmp_path / "data"
    for i in range(10):
        write_image(root / f"{i}.png", (32, 32), seed=i)
    run = tmp_path / "run"
    assert main(["pretrain", "demo", f"data.path={root}", f"run.dir={run}"]) == 2  # demo: batches of 128
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has 10 images, fewer than one batch of 128" in err
    assert "Set train.batch_size to at most 10, or add images." in err
    assert not run.exists()  # nothing written
