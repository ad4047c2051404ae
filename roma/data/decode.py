"""The one rule for turning an image file into the 8-bit RGB the models take, and for refusing
what cannot be turned faithfully. The data check asks the same questions from the header.

    img = open_rgb(path_or_bytes)      # PIL RGB image, or BadImage (a ValueError) naming why
    header_facts(path)                 # -> (mode, width, height) from the header, nothing decoded
    mode_problem(mode), size_problem(w, h)   # None, or why open_rgb would refuse it

Modes (docs/data.md): 8-bit modes (1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV) are
converted by PIL as usual. 16-bit grayscale (I;16, I;16L, I;16B, I;16N, common in remote sensing)
is scaled to 8 bits by one stated rule, value * 255 / 65535 (so 12-bit data comes out dark, never
clipped); PIL's own convert("RGB") clipped every value above 255 to white. 32-bit integer (I)
and float (F) images have no range an 8-bit image can state: refused, to be converted to 8 bits
by the user. Any other mode is refused.

Pixel cap: an image over MAX_PIXELS pixels (default 40 megapixels, e.g. 6,300 x 6,300; the
environment variable ROMA_MAX_PIXELS overrides it) is refused before it is decoded: a 144-megapixel
image decodes into 430 MB of RGB per image per worker, and a decompression bomb into far more.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS_ENV = "ROMA_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000
EIGHT_BIT = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr", "LAB", "HSV"}
SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
# what a broken file raises while it is read and decoded (PIL uses all of these)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


class BadImage(ValueError):
    """An image file the models cannot be fed faithfully (or at all); the message says why."""


def max_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive number of pixels, e.g. 40000000")
    return value


def mode_problem(mode: str) -> str | None:
    if mode in EIGHT_BIT or mode in SIXTEEN_BIT:
        return None
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "32-bit float"
        return f"{kind} image, mode {mode}, refused: no 8-bit scaling can be stated; convert it to 8-bit RGB first"
    return f"image mode {mode} refused: it cannot be converted to RGB faithfully; convert it to 8-bit RGB first"


def size_problem(width: int, height: int) -> str | None:
    cap = max_pixels()
    if width * height > cap:
        return (f"over the pixel cap of {cap:,} that {MAX_PIXELS_ENV} sets, refused before decoding "
                f"({width} x {height} = {width * height:,} pixels)")
    return None


def header_problem(source: str | os.PathLike | bytes) -> str | None:
    """Why open_rgb would refuse this file, from its header alone (mode, size); None when it would not."""
    try:
        mode, w, h = header_facts(source)
    except DECODE_ERRORS as e:
        return f"unreadable image header ({type(e).__name__}: {e})"
    return mode_problem(mode) or size_problem(w, h)


def header_facts(path: str | os.PathLike | bytes) -> tuple[str, int, int]:
    """(mode, width, height) read from the header only (a path, or the file's first bytes)."""
    with _cap_guard():
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
            return im.mode, im.width, im.height


@contextlib.contextmanager
def _cap_guard():
    """PIL's own bomb check follows our cap (it raises past twice the cap); its warning is ours to give."""
    Image.MAX_IMAGE_PIXELS = max_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT:
        a = np.asarray(img, dtype=np.uint32)  # 0..65535 -> 0..255, rounded: the stated scaling
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def open_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Fully decode an image file (a path or its bytes) as 8-bit RGB, by the rules above.

    BadImage for a refused mode or size, or any decode error of a broken file."""
    try:
        with _cap_guard():
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
            problem = mode_problem(img.mode) or size_problem(img.width, img.height)
            if problem:
                img.close()
                raise BadImage(problem)
            img.load()  # a truncated file raises here, not later
            return _to_rgb(img)
    except BadImage:
        raise
    except DECODE_ERRORS as e:
        raise BadImage(f"{type(e).__name__}: {e}") from e
