"""A tiny classifier whose full-integer int8 conversion collapses, and its healthy twin.

Trained on synthetic data (a few seconds), then one unit of the middle Dense layer gets a
bias of 1000 while the next layer ignores that unit: the answers hardly move, but per-tensor
int8 must cover 0..1000 with 256 levels, so every other unit of that tensor falls on one or
two levels. Runnable: `python -m tests.support.collapsing DIR` writes DIR/healthy.keras,
DIR/collapsing.keras, DIR/extreme.keras (the outlier at 1e6: int16x8 collapses too) and
DIR/calibration.npy (the training images, the model's input layout).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPE = (8, 8, 1)
SAMPLES = 600
OUTLIER = 1000.0


@dataclass(frozen=True, eq=False)
class CollapsingModels:
    """The files written, the samples, and the collapsing model's Keras probabilities."""

    healthy: Path
    collapsing: Path
    calibration: Path
    x: np.ndarray
    keras_probs: np.ndarray
    y: np.ndarray


def build(root: str | Path, widths: tuple[int, int] = (32, 16)) -> CollapsingModels:
    """Train, save the healthy model, plant the outlier unit, save the collapsing one.

    `widths`: the units of the `features` and `outlier` layers; wider ones (e.g. (256, 256))
    make a model whose weights outweigh the flatbuffer's fixed overhead, so sizes compare."""
    from edgeship.train.quiet import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, *SHAPE)).astype("float32")
    y = (x.reshape(SAMPLES, -1) @ rng.normal(size=(int(np.prod(SHAPE)), 4))).argmax(1)
    inp = keras.Input(SHAPE)
    h = keras.layers.Flatten(name="flat")(inp)
    h = keras.layers.Dense(widths[0], activation="relu", name="features")(h)
    h = keras.layers.Dense(widths[1], activation="relu", name="outlier")(h)
    out = keras.layers.Dense(4, activation="softmax", name="head")(h)
    model = keras.Model(inp, out, name="collapsing")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    model.save(root / "healthy.keras")

    kernel, bias = model.get_layer("outlier").get_weights()
    kernel[:, 0], bias[0] = 0.0, OUTLIER  # unit 0 is always 1000 ...
    model.get_layer("outlier").set_weights([kernel, bias])
    head_kernel, head_bias = model.get_layer("head").get_weights()
    head_kernel[0, :] = 0.0  # ... and the head ignores it
    model.get_layer("head").set_weights([head_kernel, head_bias])
    model.save(root / "collapsing.keras")
    np.save(root / "calibration.npy", x)
    return CollapsingModels(
        healthy=root / "healthy.keras",
        collapsing=root / "collapsing.keras",
        calibration=root / "calibration.npy",
        x=x,
        keras_probs=model.predict(x, verbose=0),
        y=y,
    )


def with_outlier(source: Path, dest: Path, outlier: float) -> Path:
    """The collapsing model with the outlier unit at `outlier` instead of 1000. At 1e6 even
    int16x8 collapses: its step is 1e6 / 32767, about 30, above every other unit's values."""
    from edgeship.train.quiet import import_keras

    model = import_keras().saving.load_model(source)
    kernel, bias = model.get_layer("outlier").get_weights()
    bias[0] = outlier
    model.get_layer("outlier").set_weights([kernel, bias])
    model.save(dest)
    return dest


def as_pixel_model(source: Path, dest: Path) -> Path:
    """The same layers and weights behind a Rescaling(1/255): a model for raw 0-255 pixels."""
    from edgeship.train.quiet import import_keras

    keras = import_keras()
    src = keras.saving.load_model(source)
    inp = keras.Input(SHAPE)
    h = keras.layers.Rescaling(1 / 255, name="scale")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    for name in ("features", "outlier", "head"):
        layer = keras.layers.Dense.from_config(src.get_layer(name).get_config())
        h = layer(h)
        layer.set_weights(src.get_layer(name).get_weights())
    keras.Model(inp, h, name="pixels").save(dest)
    return dest


def write_class_folders(root: Path, x: np.ndarray, y: np.ndarray, num_classes: int) -> Path:
    """`root/class_<k>/<i>.png`: the samples as 8-bit grayscale images, one folder per class
    (a class without samples still gets its folder)."""
    from PIL import Image

    for k in range(num_classes):
        (root / f"class_{k}").mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / f"class_{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image[..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.collapsing DIR")
    built = build(sys.argv[1])
    extreme = with_outlier(built.collapsing, Path(sys.argv[1]) / "extreme.keras", 1e6)
    print(f"wrote {built.healthy}, {built.collapsing}, {extreme}, {built.calibration}")
