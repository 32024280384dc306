"""Decoding one image file into an 8-bit RGB picture, whatever its mode.

Promises: `decode_rgb` returns a PIL image in mode "RGB" for every image PIL can read (grayscale, palette with or
without transparency, RGBA/LA, CMYK, YCbCr, 16-bit and 32-bit integer, float), honours the EXIF orientation, and
raises `UnreadableImage` (never anything else) for a file that is not a readable image, including truncated files,
empty files and random bytes. An image whose header announces more than `PIL.Image.MAX_IMAGE_PIXELS` pixels (about
89 million by default; None turns the check off) is refused before anything is decoded: a small file can announce a
huge picture (a decompression bomb) and decoding it would exhaust memory. PIL itself only warns up to twice that
limit, and its warnings are silenced here, so the limit is checked explicitly.

Large JPEGs are not decoded at full size when a `min_side` is given: the decoder scales them by 1/2, 1/4 or 1/8 while
decoding (PIL's `draft`), as far as both sides stay at least `min_side` (a 10,000 x 10,000 photo is then read as
1,250 x 1,250, quickly and in 1/64 of the memory, and is no decompression bomb). Other formats decode at full size.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

# Lower-case suffixes of the files treated as images; everything else in a dataset folder is ignored.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)

_IN_MEMORY_FILE = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
_TRANSPARENT_BACKGROUND = (255, 255, 255)  # transparent pixels are composited onto white


class UnreadableImage(Exception):
    """A file that should be an image could not be decoded."""


def is_image_name(name: str) -> bool:
    """True for a relative path with an image suffix and no hidden part (macOS `._x.jpg`, `.thumbnails/` skipped)."""
    hidden = any(part.startswith(".") and part not in (".", "..") for part in name.split("/"))
    return not hidden and name.lower().endswith(IMAGE_EXTENSIONS)


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode the bytes of an image file to a fully loaded RGB image; with `min_side`, a JPEG at least twice that
    on both sides is decoded at the smallest of 1/2, 1/4, 1/8 of its size whose sides are still >= min_side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's EXIF/metadata chatter; real failures raise below
            image = Image.open(io.BytesIO(data))  # reads the header only
            if min_side is not None and min(image.size) >= 2 * min_side:
                image.draft(image.mode, (min_side, min_side))  # JPEG: scaled while decoding; others: no effect
            _refuse_bombs(image)
            image.load()  # decode now: a truncated file raises here, not later in a worker's transform
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except UnreadableImage:
        raise
    except Exception as error:  # PIL raises many types on malformed input (OSError, SyntaxError, struct.error, ...)
        # PIL names the in-memory file (`<_io.BytesIO object at 0x...>`), which says nothing to the user
        reason = _IN_MEMORY_FILE.sub("", str(error)).strip()
        raise UnreadableImage(f"{type(error).__name__}: {reason}") from None


def _refuse_bombs(image: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise UnreadableImage(
            f"{image.width}x{image.height} pixels is more than PIL.Image.MAX_IMAGE_PIXELS={limit} (a decompression "
            "bomb?): shrink the file or save it as JPEG (read at a reduced size), or raise that limit in Python"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any PIL mode to 8-bit RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        # A palette may carry transparency; go through RGBA so that it is composited like an alpha channel.
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _TRANSPARENT_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grayscale -> 8-bit RGB by scaling, not clipping (PIL's convert clips)."""
    pixels = np.asarray(image).astype(np.float64)  # H x W
    if image.mode == "F":
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255.0 if high > low else np.zeros_like(pixels)
    else:
        # 16-bit data (also when PIL reports a 16-bit PNG as mode "I") spans 0..65535.
        full_scale = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        scaled = np.clip(pixels, 0, full_scale) / full_scale * 255.0
    gray = np.rint(scaled).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1))
