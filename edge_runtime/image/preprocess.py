"""Pillow preprocessing: any image file or PIL image -> a uint8 (H, W, C) array for the model.

Steps: open (with a pixel-count guard against decompression bombs; a JPEG decodes at the
smallest DCT scale the model still needs, `edge_runtime.image.shrink`), shrink by whole factors
while bringing 16-bit/float modes to 8 bits, flattening alpha onto white and converting to the
model's channels (1: L, 3: RGB) band by band, apply the EXIF orientation, resize to the model's H x
W, and optionally invert. An image already at or below the needed size is converted whole, as
before. `to_size=False` decodes and converts the full image (the reference path).

Resize rules (the metadata's `input.resize`, so convert's calibration, bench and the runtime
agree): `"stretch"` (the default) scales the whole image to H x W, changing its aspect;
`"crop"` first cuts the largest centered region with the model's aspect (W/H), then scales it.

`invert` is for models trained on light objects on a dark background (Fashion-MNIST, whose
metadata says `input.background == "dark"`): a photo of a garment on a white table must be
inverted to look like the training data. `"auto"` (the default) inverts only when the model's
background is dark AND the image's border pixels are light (mean > 127 of 255); `"yes"`
always inverts, `"no"` never does.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_runtime.errors import ImageError
from edge_runtime.image.shrink import (
    BAND_PIXELS,
    decoded_bytes,
    draft_to_size,
    orientation,
    orientation_swaps,
    reduce_factors,
    reduce_in_bands,
    upright,
)
from edge_runtime.options import INVERT_CHOICES, normalize_invert

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "INVERT_CHOICES",
    "MAX_PIXELS",
    "ImageTooLargeError",
    "RESIZE_RULES",
    "border_mean",
    "load_and_preprocess",
    "load_image",
    "needed_size",
    "preprocess_image",
]

MAX_PIXELS = 40_000_000  # 40 megapixels decoded; bigger JPEGs decode smaller (_draft_big_jpeg)
RESIZE_RULES = ("stretch", "crop")


class ImageTooLargeError(ImageError):
    """An image whose decoded pixels (after the JPEG draft) exceed the caller's byte budget."""


def _check_size(size: tuple[int, int], max_pixels: int, source: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(
            f"The image has zero size ({width}x{height}). Pass a real image. Received: {source}"
        )
    if width * height > max_pixels:
        raise ImageError(
            f"The image is too large ({width}x{height} = {width * height} pixels, the limit is "
            f"{max_pixels}): possibly a decompression bomb. Downscale it first. Received: {source}"
        )


# `warnings.catch_warnings` swaps the process-wide filter list: one opener at a time, or two
# threads could restore each other's lists. Opening reads only the header, so this is brief.
_OPEN_LOCK = threading.Lock()


def _open_quietly(fp: io.BytesIO | Path) -> Image.Image:
    """`Image.open` without Pillow's DecompressionBombWarning (past ~89 MP): our own, lower
    `max_pixels` check on the header's size follows it and raises ImageError instead."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fp)


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _is_heif(source: bytes | bytearray | Path) -> bool:
    """An ISO-BMFF file whose `ftyp` box names a HEIF brand (bytes 4-12: `ftypheic`, ...)."""
    if isinstance(source, Path):
        try:
            with source.open("rb") as f:
                head = f.read(12)
        except OSError:
            return False
    else:
        head = bytes(source[:12])
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _draft_big_jpeg(img: Image.Image, max_pixels: int) -> None:
    """A JPEG over `max_pixels` (a 48-108 MP phone photo) is decoded at 1/2, 1/4 or 1/8 of its
    size, the first that fits: JPEG decodes so for free, and it is still far larger than any
    model's input. Other formats cannot, and keep the limit."""
    width, height = img.size
    if img.format != "JPEG" or width * height <= max_pixels:
        return
    for k in (2, 4, 8):
        if -(-width // k) * -(-height // k) <= max_pixels:
            img.draft(img.mode, (-(-width // k), -(-height // k)))
            return


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    size: tuple[int, int] | None = None,
    max_decoded_bytes: int | None = None,
) -> Image.Image:
    """Open and decode an image file (or bytes), raising ImageError if it is unusable.

    `size` (W, H): the smallest the caller needs (display orientation); a JPEG then decodes
    at the smallest DCT scale still that large. `max_decoded_bytes`: refuse (ImageTooLargeError)
    an image whose decoded pixels would take more, before decoding them.
    """
    fp: io.BytesIO | Path
    if isinstance(source, (bytes, bytearray)):
        label, fp = "<bytes>", io.BytesIO(source)
        if not source:
            raise ImageError("The image is empty (0 bytes). Received: <bytes>")
    else:
        path = Path(source)
        label = f"path={path}"
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "not found"
            raise ImageError(f"Image file {what}. Check the path. Received: {label}")
        if path.stat().st_size == 0:
            raise ImageError(f"The image file is empty (0 bytes). Received: {label}")
        fp = path
    try:
        img = _open_quietly(fp)
    except UnidentifiedImageError:
        if _is_heif(source if isinstance(source, (bytes, bytearray)) else Path(source)):
            raise ImageError(
                "The image is HEIC/HEIF (an iPhone's default photo format), which Pillow does "
                "not read. Export it as JPEG (iPhone: Settings > Camera > Formats > Most "
                f"Compatible). Received: {label}"
            ) from None
        raise ImageError(
            "The file is not an image Pillow can read (PNG, JPEG, BMP, ...). "
            f"Pass an image file. Received: {label}"
        ) from None
    except Image.DecompressionBombError as err:  # past 2x Pillow's limit: size unknown here
        raise ImageError(
            f"The image is too large ({str(err).rstrip('.')}; our limit is {max_pixels} "
            f"pixels): possibly a decompression bomb. Downscale it first. Received: {label}"
        ) from None
    except OSError as err:
        raise ImageError(f"Cannot open the image ({err}). Received: {label}") from None
    try:
        if size is not None:
            draft_to_size(img, size)
        _draft_big_jpeg(img, max_pixels)
        _check_size(img.size, max_pixels, label)  # from the header, before any decoding
        if max_decoded_bytes is not None and decoded_bytes(img) > max_decoded_bytes:
            width, height = img.size
            raise ImageTooLargeError(
                f"The image would take {decoded_bytes(img) / 2**20:.0f} MiB decoded "
                f"({width}x{height} {img.mode}), over this server's budget of "
                f"{max_decoded_bytes / 2**20:.0f} MiB. Send a smaller image or a JPEG. "
                f"Received: {label}"
            )
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(
                f"The image is truncated or corrupt ({err}). Re-copy it. Received: {label}"
            ) from None
    except ImageError:
        img.close()  # no file left open behind the error
        raise
    return img


_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _peak(img: Image.Image) -> float:
    """The value that becomes 255 for a 16-bit or float image, read over the whole image
    (band by band: no full-size float copy): 65535 for 16 bits (or I values over 255), 255
    else; for float, 1.0 when every value is <= 1 (a 0-1 image), else 255."""
    if img.mode.startswith("I;16"):
        return 65535.0
    width, height = img.size
    rows = max(1, BAND_PIXELS // max(width, 1))
    top = -np.inf
    for y in range(0, height, rows):
        band = np.asarray(img.crop((0, y, width, min(height, y + rows))))
        if band.size:
            top = max(top, float(np.nanmax(band)) if img.mode == "F" else float(band.max()))
    if img.mode == "F":
        return 1.0 if top <= 1.0 else 255.0
    return 65535.0 if top > 255 else 255.0


def _to_8bit(img: Image.Image, peak: float | None = None) -> Image.Image:
    """16-bit integer and float modes -> L (Pillow's own convert would clip them); `peak`, the
    whole image's (`_peak`), when `img` is one band of it."""
    if img.mode not in _WIDE_MODES and img.mode != "F":
        return img
    if peak is None:
        peak = _peak(img)
    arr = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        arr = np.clip(np.nan_to_num(np.round(arr * (255.0 / peak))), 0, 255)
    else:
        arr = np.clip(np.round(arr * (255.0 / peak)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images onto white (how they look in a viewer)."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


def border_mean(arr: npt.NDArray[Any]) -> float:
    """Mean brightness (0-255) of the outermost rows and columns of an (H, W[, C]) array."""
    a = arr.astype(np.float32)
    if a.ndim == 3:
        a = a.mean(axis=2)
    edges = np.concatenate([a[0, :], a[-1, :], a[:, 0], a[:, -1]])
    return float(edges.mean())


def preprocess_image(
    img: Image.Image,
    shape: tuple[int, ...],
    *,
    invert: str | bool | None = "auto",
    background: str | None = None,
    max_pixels: int = MAX_PIXELS,
    resize: str = "stretch",
    to_size: bool = True,
) -> npt.NDArray[np.uint8]:
    """A PIL image -> uint8 array of `shape` (H, W, C), C in {1, 3}, ready as raw pixels."""
    invert_mode = normalize_invert(invert)
    if resize not in RESIZE_RULES:
        raise ImageError(
            f"Unknown resize rule: expected one of {', '.join(RESIZE_RULES)}. "
            f"Received: resize={resize!r}"
        )
    if not isinstance(img, Image.Image):
        raise ImageError(f"Expected a PIL image. Received: {type(img).__name__}")
    height, width, channels = (int(d) for d in shape)
    if channels not in (1, 3):
        raise ImageError(
            f"Image preprocessing supports models with 1 or 3 input channels; pass arrays "
            f"for other models. Received: model input shape={tuple(shape)}"
        )
    _check_size(img.size, max_pixels, f"image of size {img.size[0]}x{img.size[1]}")
    mode = "L" if channels == 1 else "RGB"
    factors = (1, 1)
    if to_size:
        factors = reduce_factors(img.size, (width, height), resize, orientation_swaps(img))
    if factors != (1, 1):  # shrink first, each band converted on its own, then turn upright
        peak = _peak(img) if img.mode in _WIDE_MODES or img.mode == "F" else None
        turn = orientation(img)
        img = reduce_in_bands(
            img, factors, lambda band: _flatten_alpha(_to_8bit(band, peak)).convert(mode)
        )
        img = upright(img, turn)
    else:  # a broken EXIF block must not make a readable image unusable
        with contextlib.suppress(Exception):
            img = ImageOps.exif_transpose(img)
    img = _flatten_alpha(_to_8bit(img))
    img = img.convert(mode)
    if resize == "crop" and img.size != (width, height):
        img = ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
    elif img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if invert_mode == "yes" or (
        invert_mode == "auto" and background == "dark" and border_mean(arr) > 127.0
    ):
        arr = 255 - arr
    return np.ascontiguousarray(arr)


def load_and_preprocess(
    source: str | os.PathLike[str],
    shape: tuple[int, ...],
    *,
    invert: str | bool | None = "auto",
    background: str | None = None,
    max_pixels: int = MAX_PIXELS,
    resize: str = "stretch",
    to_size: bool = True,
) -> npt.NDArray[np.uint8]:
    """Read an image file and return the uint8 (H, W, C) array for the model."""
    size = needed_size(shape) if to_size else None
    img = load_image(source, max_pixels=max_pixels, size=size)
    try:
        return preprocess_image(
            img,
            shape,
            invert=invert,
            background=background,
            max_pixels=max_pixels,
            resize=resize,
            to_size=to_size,
        )
    finally:
        img.close()


def needed_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (W, H) a model of input `shape` (H, W, C) needs of a photo, under either resize
    rule: what `load_image(size=...)` decodes a JPEG down to."""
    return int(shape[1]), int(shape[0])
