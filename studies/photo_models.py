"""The models and photos of `python -m studies.photo_speed`, built once and cached.

Models (under `${EDGESHIP_CACHE:-~/.cache/edgeship}/photo_speed/`): the tutorial MLP and the
CNN, one epoch of `edgeship train` on Fashion-MNIST each, converted to int8; a MobileNet-sized
model (`keras.applications.MobileNetV2(weights=None)`, 224x224x3, 1000 classes, random
weights: its speed is a MobileNet's, its answers mean nothing), int8 with pixels scaled to
[-1, 1]; and the BYO-style fruit model of `tests/support/byo_example.py`, int8.

Photos: a small image upscaled to a phone's size (3 MP: 2048x1536, 12 MP: 4032x3024) with a
little sensor-like noise, saved as a JPEG of a phone's quality (~3.5 MB at 12 MP).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"3 MP": (2048, 1536), "12 MP": (4032, 3024)}


def cache_dir() -> Path:
    """`${EDGESHIP_CACHE:-~/.cache/edgeship}/photo_speed`."""
    root = os.environ.get("EDGESHIP_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgeship"
    return base / "photo_speed"


def _fashion_model(kind: str, out: Path) -> Path:
    from edgeship.convert import convert_model
    from edgeship.train import TrainConfig, train

    trained = train(TrainConfig(model=kind, epochs=1), out)
    report = convert_model(trained.model_path, out, modes=("int8",))
    report.raise_for_failures()
    return report.results[0].path


def _mobilenet(out: Path) -> Path:
    import keras
    import tensorflow as tf

    from edge_runtime.metadata.block import embed_metadata

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    out.mkdir(parents=True, exist_ok=True)
    model.export(
        str(out / "export"),
        verbose=False,
        input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)],
    )
    conv = tf.lite.TFLiteConverter.from_saved_model(str(out / "export"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, size=(8, 224, 224, 3)).astype(np.float32)
    conv.representative_dataset = lambda: ([c[None]] for c in calib)
    meta = {
        "schema_version": 1,
        "model": "mobilenet_v2 (random weights)",
        "class_names": [f"class_{i}" for i in range(1000)],
        "input": {
            "shape": [224, 224, 3],
            "dtype": "float32",
            "scale": 1 / 127.5,
            "offset": -1.0,
            "color_mode": "rgb",
        },
        "quantization": {"mode": "int8"},
    }
    path = out / "model_int8.tflite"
    path.write_bytes(embed_metadata(conv.convert(), meta))
    return path


def _fruit(out: Path) -> tuple[Path, Path]:
    from edgeship.convert import convert_model
    from tests.support.byo_example import ORDER, build

    model_path, photos, _ = build(out)
    report = convert_model(
        model_path, out / "run", modes=("int8",), calibration_data=photos, class_names=list(ORDER)
    )
    report.raise_for_failures()
    return report.results[0].path, photos


def models() -> dict[str, Path]:
    """{"MLP", "CNN", "MobileNetV2", "fruit"} -> cached int8 .tflite (built on first use)."""
    root = cache_dir()
    found = {}
    for name, folder, build in (
        ("MLP", root / "mlp", lambda d: _fashion_model("mlp", d)),
        ("CNN", root / "cnn", lambda d: _fashion_model("cnn", d)),
        ("MobileNetV2", root / "mobilenet", _mobilenet),
        ("fruit", root / "fruit", lambda d: _fruit(d)[0]),
    ):
        done = sorted(folder.rglob("model_int8.tflite"))
        found[name] = done[0] if done else build(folder)
    return found


def fruit_photos() -> Path:
    """The BYO-style photo folder (one subfolder per class) the fruit model came with."""
    return cache_dir() / "fruit" / "photos"


def phone_jpeg(
    small: np.ndarray, size: tuple[int, int], seed: int = 0, quality: int = 92, noise: float = 6.0
) -> bytes:
    """`small` (H, W[, 3]) uint8 upscaled to `size` (W, H) as an RGB JPEG, with sensor-like
    noise (a phone photo's texture: without it a 12 MP JPEG is ten times too small)."""
    img = Image.fromarray(small).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if noise:
        arr = arr + np.random.default_rng(seed).normal(0, noise, size=arr.shape[:2] + (1,))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def scene(seed: int = 0) -> np.ndarray:
    """A 96x128 smooth colour scene with a few shapes (the speed photos' content)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    img = np.dstack([140 + 70 * np.sin(x / 11 + 1), 120 + 60 * np.cos(y / 9), 90 + x / 2])
    for _ in range(6):
        cx, cy, r = rng.integers(10, 118), rng.integers(10, 86), rng.integers(5, 20)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img.clip(0, 255).astype(np.uint8)
