import io

import numpy as np
import pytest
from PIL import Image

from mocokit.data.imagefile import UnreadableImage, decode_rgb, is_image_name


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_grayscale_becomes_rgb_with_equal_channels() -> None:
    decoded = decode_rgb(encode(Image.new("L", (5, 4), 77)))
    assert decoded.mode == "RGB" and decoded.size == (5, 4)
    assert np.asarray(decoded).reshape(-1, 3).tolist()[0] == [77, 77, 77]


def test_palette_with_transparency_is_composited_onto_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    pixels = np.asarray(decode_rgb(encode(image)))
    assert pixels.shape == (4, 4, 3) and (pixels == 255).all()


def test_rgba_is_composited_by_its_alpha() -> None:
    image = Image.new("RGBA", (3, 3), (0, 0, 0, 128))  # half-transparent black over white -> mid gray
    pixels = np.asarray(decode_rgb(encode(image)))
    assert abs(int(pixels[0, 0, 0]) - 127) <= 1


def test_cmyk_becomes_rgb() -> None:
    image = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    pixels = np.asarray(decode_rgb(encode(image, "JPEG")))
    assert pixels.shape == (3, 3, 3) and pixels[0, 0, 0] > 200 and pixels[0, 0, 1] < 60


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)  # mode I;16
    pixels = np.asarray(decode_rgb(encode(image)))
    assert pixels[0, :, 0].tolist() == [0, 128, 255]


def test_truncated_and_garbage_files_raise_unreadable() -> None:
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(UnreadableImage):
        decode_rgb(data[: len(data) // 2])
    with pytest.raises(UnreadableImage):
        decode_rgb(b"not an image at all")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b.JPG", True), ("x.png", True), ("notes.txt", False), ("a/._b.jpg", False), (".cache/x.png", False)],
)
def test_image_names(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected
