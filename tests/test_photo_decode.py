"""Decode to size (edge_runtime.image.preprocess + shrink): the same pixels as before for images at
or below the model's need, the JPEG scale chosen after EXIF orientation, the crop rule kept,
and big palette / 16-bit images shrunk without full-size copies."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from edge_runtime.image.preprocess import load_and_preprocess, load_image, preprocess_image

# ---------------------------------------------------------------------------------------------
# The preprocessing as it was before decode to size (full decode, full-size conversions), kept
# here as the reference: the product must give exactly these pixels for small images.


def _reference_8bit(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if (img.mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(np.round(arr * (255.0 / peak)), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(np.round(arr)), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), "L")
    return img


def _reference_alpha(img):
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img


def reference(path, shape, resize="stretch"):
    """Yesterday's `load_and_preprocess(path, shape, invert="no")`."""
    height, width, channels = shape
    img = Image.open(path)
    img.load()
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    img = _reference_alpha(_reference_8bit(img)).convert("L" if channels == 1 else "RGB")
    if resize == "crop" and img.size != (width, height):
        img = ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
    elif img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


# ---------------------------------------------------------------------------------------------


def _smooth(width, height, seed=0):
    """A photo-like RGB array: smooth gradients and a few blobs (JPEG compresses it well)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6)
        out[..., c] = 127 + 100 * np.sin(fx * x / width * 6 + phase) * np.cos(fy * y / height * 6)
    return out.clip(0, 255).astype(np.uint8)


def _small_images(tmp_path, size):
    """One file per mode that preprocessing treats differently, of `size` (W, H)."""
    w, h = size
    rgb = _smooth(w, h, seed=w)
    gray = rgb[..., 0]
    paths = {}

    def save(name, img, **kw):
        paths[name] = tmp_path / name
        img.save(paths[name], **kw)

    save(f"rgb_{w}x{h}.png", Image.fromarray(rgb))
    save(f"l_{w}x{h}.png", Image.fromarray(gray))
    rgba = np.dstack([rgb, (np.arange(w)[None, :].repeat(h, 0) * 255 // max(w - 1, 1))])
    save(f"rgba_{w}x{h}.png", Image.fromarray(rgba.astype(np.uint8), "RGBA"))
    pal = Image.fromarray(rgb).quantize(16)
    save(f"p_{w}x{h}.png", pal, transparency=3)
    save(f"i16_{w}x{h}.png", Image.fromarray(gray.astype(np.uint16) * 257))
    save(f"la_{w}x{h}.png", Image.fromarray(np.dstack([gray, gray[::-1]]), "LA"))
    save(f"rgb_{w}x{h}.jpg", Image.fromarray(rgb), quality=90)
    return paths


@pytest.mark.parametrize("shape", [(28, 28, 1), (24, 40, 3)])
@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_images_at_or_below_the_need_give_yesterdays_pixels(tmp_path, shape, resize):
    h, w, _ = shape
    for size in ((w // 2, h // 2), (w, h), (2 * w + 3, 2 * h + 1), (3 * w - 1, 3 * h - 1)):
        for name, path in _small_images(tmp_path, size).items():
            if name.endswith(".jpg") and size[0] >= 2 * w and size[1] >= 2 * h:
                continue  # a JPEG of twice the need decodes at 1/2: not the same pixels
            got = load_and_preprocess(path, shape, invert="no", resize=resize)
            np.testing.assert_array_equal(got, reference(path, shape, resize), err_msg=name)


def _rotated_photo(path, stored=(4032, 3024), orientation=6):
    """A 12 MP JPEG stored wide, shown tall (EXIF 6: turn 90 degrees clockwise): the stored
    image's left quarter is white, which is the top quarter once upright."""
    w, h = stored
    arr = _smooth(w // 8, h // 8, seed=3)
    img = Image.fromarray(arr).resize(stored, Image.Resampling.BILINEAR)
    img.paste((255, 255, 255), (0, 0, w // 4, h))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=90, exif=exif.tobytes())


def test_exif_rotation_is_applied_before_the_jpeg_scale_is_chosen(tmp_path):
    path = tmp_path / "portrait.jpg"
    _rotated_photo(path)
    shape = (400, 100, 3)  # tall and narrow: needs 100 wide, 400 high once upright
    # Stored, the need is 400 wide x 100 high: 4032 // 400 = 10 -> 1/8 (504 x 378). Without
    # the rotation it would be 100 x 400: 3024 // 400 = 7 -> 1/4 (1008 x 756).
    with load_image(path, size=(100, 400)) as img:
        assert img.size == (504, 378)
    got = load_and_preprocess(path, shape, invert="no")
    want = reference(path, shape)
    assert got.shape == shape
    assert got[:90].mean() > 250 and got[110:].mean() < 240  # white on top: turned upright
    assert np.abs(got.astype(int) - want).mean() < 3


def test_a_rotated_12mp_photo_into_a_small_model_equals_the_full_decode(tmp_path):
    """A 12 MP EXIF-6 JPEG into a 32x32 model takes the banded reduce (1/8 draft, then whole
    factors): it is turned upright all the same, within a few levels of `--full-decode`."""
    from edge_runtime.image.shrink import reduce_factors

    path = tmp_path / "portrait.jpg"
    _rotated_photo(path)
    shape = (32, 32, 1)
    with load_image(path, size=(32, 32)) as img:
        assert img.size == (504, 378)
        assert reduce_factors(img.size, (32, 32), "stretch", True) != (1, 1)  # the reduce path
    got = load_and_preprocess(path, shape, invert="no").astype(int)
    full = load_and_preprocess(path, shape, invert="no", to_size=False).astype(int)
    assert got[:7].mean() > 250 and got[9:].mean() < 240  # white on top: turned upright
    assert np.abs(got - full).mean() < 3, np.abs(got - full).mean()


def test_the_crop_rule_is_kept_when_decoding_to_size(tmp_path):
    path = tmp_path / "wide.jpg"
    arr = _smooth(4032 // 8, 3024 // 8, seed=4)
    img = Image.fromarray(arr).resize((4032, 3024), Image.Resampling.BILINEAR)
    img.paste((0, 0, 0), (0, 0, 600, 3024))  # black bands at the sides: the crop cuts them
    img.paste((0, 0, 0), (4032 - 600, 0, 4032, 3024))
    img.save(path, quality=90)
    shape = (32, 32, 3)
    with load_image(path, size=(32, 32)) as small:
        assert small.size == (504, 378)  # 1/8: still >= 32 x 32 on both axes
    cropped = load_and_preprocess(path, shape, invert="no", resize="crop")
    stretched = load_and_preprocess(path, shape, invert="no", resize="stretch")
    assert np.abs(cropped.astype(int) - reference(path, shape, "crop")).mean() < 2
    assert np.abs(stretched.astype(int) - reference(path, shape)).mean() < 2
    assert cropped[:, :2].max() > 0 and stretched[:, :2].max() < 40  # the bands, cut or not


def _palette_with_alpha(size):
    img = Image.new("P", size, 0)
    img.putpalette([0, 0, 0, 200, 30, 30, 30, 30, 200] + [0] * 759)
    img.paste(1, (0, 0, size[0] // 2, size[1]))
    img.paste(2, (size[0] // 2, 0, size[0], size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)  # index 0 (the bottom-right quarter) transparent
    return buf.getvalue()


def _gray16(size):
    arr = np.zeros(size[::-1], np.uint16)
    arr[:, : size[0] // 2] = 60000
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("make", [_palette_with_alpha, _gray16])
def test_big_palette_and_16_bit_images_shrink_to_the_same_picture(tmp_path, make):
    path = tmp_path / "big.png"
    path.write_bytes(make((2400, 1800)))
    for shape in ((28, 28, 1), (32, 32, 3)):
        got = load_and_preprocess(path, shape, invert="no").astype(int)
        diff = np.abs(got - reference(path, shape))
        # the same picture; at the sharp edges, a fraction of a pixel's shift (the last reduce
        # block is partial: the resize sees it whole, where Pillow's own reduce weighs it)
        assert diff.mean() < 1 and diff.max() <= 16


def test_the_decoded_budget_refuses_before_decoding(tmp_path):
    from edge_runtime.image.preprocess import ImageTooLargeError

    data = _gray16((3000, 3000))  # 18 MB decoded (2 bytes per pixel)
    with pytest.raises(ImageTooLargeError, match="17 MiB decoded .* budget of 16 MiB"):
        load_image(data, size=(28, 28), max_decoded_bytes=16 << 20)
    with load_image(data, size=(28, 28), max_decoded_bytes=18 << 20) as img:
        assert img.size == (3000, 3000)
    jpeg = io.BytesIO()
    Image.fromarray(_smooth(4000, 3000)).save(jpeg, "JPEG")  # 48 MB as RGBX; 1/8: 0.75 MB
    with load_image(jpeg.getvalue(), size=(28, 28), max_decoded_bytes=1 << 20) as img:
        assert img.size == (500, 375)


def test_preprocess_image_of_a_big_pil_image_matches_the_reference(tmp_path):
    """A PIL image passed in (already decoded) is shrunk the same way, EXIF included."""
    path = tmp_path / "p.png"
    path.write_bytes(_palette_with_alpha((1500, 900)))
    with Image.open(path) as img:
        got = preprocess_image(img, (24, 40, 3), invert="no")
    diff = np.abs(got.astype(int) - reference(path, (24, 40, 3)))
    assert diff.mean() < 1 and diff.max() <= 16
