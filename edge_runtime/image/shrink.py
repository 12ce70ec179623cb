"""Decode to size: shrink a photo before converting it, so its cost is bounded by the model.

A phone photo is 3-12 MP; a model takes 28x28 to 224x224. Two cheap shrinks, chosen from the
size the model's resize rule needs (both rules, stretch and crop, need the source at least
W x H along each axis), in the photo's stored orientation (EXIF 5-8 swap width and height):

- a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) whose size is still >= that
  (`Image.draft`: libjpeg skips the work, nothing full-size is ever made);
- any other image (or a JPEG still over 3x the need) is reduced by whole factors
  (`Image.reduce`, a box filter) in horizontal bands, each band brought to 8 bits, flattened
  onto white and converted to the model's mode first, so a palette PNG with transparency or a
  16-bit PNG never exists as a full-size RGBA or float copy. The factors are Pillow's own
  `resize(..., reducing_gap=3.0)` ones, so the picture is the one the resize would have made.

`decoded_bytes` is what the decoded image will hold in memory (Pillow keeps 1, 2 or 4 bytes
per pixel): `serve` refuses an upload whose decoded size, after the draft, is over its budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image

__all__ = [
    "BAND_PIXELS",
    "REDUCING_GAP",
    "decoded_bytes",
    "draft_to_size",
    "orientation",
    "orientation_swaps",
    "reduce_factors",
    "reduce_in_bands",
    "upright",
]

REDUCING_GAP = 3.0  # the resize's own: reduce while the image stays >= 3x the target
BAND_PIXELS = 1 << 18  # pixels converted at once (2 MB as float64, 1 MB as RGBA)
_ONE_BYTE = {"1", "L", "P"}
_TWO_BYTES = {"I;16", "I;16B", "I;16L", "I;16N", "I;16S"}


# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 when absent or unreadable)."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block: shown as stored
        return 1
    return value if value in _UPRIGHT else 1


def orientation_swaps(img: Image.Image) -> bool:
    """True when the EXIF orientation (5-8) turns the stored image by 90 degrees to show it."""
    return orientation(img) in (5, 6, 7, 8)


def upright(img: Image.Image, value: int) -> Image.Image:
    """`img` turned as EXIF orientation `value` says (itself for 1)."""
    method = _UPRIGHT.get(value)
    return img if method is None else img.transpose(method)


def _stored(size: tuple[int, int], img: Image.Image) -> tuple[int, int]:
    """A (W, H) in display orientation -> the same need in the image's stored orientation."""
    return (size[1], size[0]) if orientation_swaps(img) else size


def draft_to_size(img: Image.Image, size: tuple[int, int]) -> None:
    """Make an unloaded JPEG decode at the smallest DCT scale still >= `size` (W, H, display
    orientation) along both axes; other images are left alone."""
    if img.format != "JPEG":
        return
    need_w, need_h = _stored(size, img)
    width, height = img.size
    if need_w <= 0 or need_h <= 0 or width < 2 * need_w or height < 2 * need_h:
        return
    # Pillow's JPEG draft picks the largest scale s in (8, 4, 2) with size // s >= requested.
    img.draft(img.mode, (need_w, need_h))


def decoded_bytes(img: Image.Image) -> int:
    """Bytes the decoded pixels take in Pillow (after any draft): 1, 2 or 4 per pixel."""
    width, height = img.size
    per_pixel = 1 if img.mode in _ONE_BYTE else 2 if img.mode in _TWO_BYTES else 4
    return width * height * per_pixel


def reduce_factors(
    size: tuple[int, int], target: tuple[int, int], resize: str, swapped: bool
) -> tuple[int, int]:
    """Whole reduce factors (stored orientation) for an image of `size` (stored) whose display
    target is `target` (W, H): the resize's reducing-gap factors, equal on both axes for the
    crop rule (it keeps the aspect)."""
    width, height = size
    if swapped:
        width, height = height, width
    tw, th = target
    fx = max(1, int(width / tw / REDUCING_GAP))
    fy = max(1, int(height / th / REDUCING_GAP))
    if resize == "crop":
        fx = fy = min(fx, fy)
    return (fy, fx) if swapped else (fx, fy)


def reduce_in_bands(
    img: Image.Image, factors: tuple[int, int], convert: Callable[[Image.Image], Image.Image]
) -> Image.Image:
    """`convert(band).reduce(factors)` band by band, pasted together: the reduced image in the
    converted mode, without a full-size converted copy. Bands are whole multiples of the
    vertical factor, so the result is the whole image's reduce."""
    fx, fy = factors
    width, height = img.size
    rows = max(fy, (BAND_PIXELS // max(width, 1)) // fy * fy)
    out: Image.Image | None = None
    for top in range(0, height, rows):
        band = convert(img.crop((0, top, width, min(height, top + rows))))
        small = band.reduce((fx, fy)) if (fx, fy) != (1, 1) else band
        if out is None:
            out = Image.new(small.mode, (math.ceil(width / fx), math.ceil(height / fy)))
        out.paste(small, (0, top // fy))
    assert out is not None  # a zero-size image is refused before
    return out
