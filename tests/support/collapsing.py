"""A tiny classifier whose full-integer int8 conversion collapses, and its healthy twin.

Trained on synthetic data (a few seconds), then one unit of the middle Dense layer gets a
bias of 1000 while the next layer ignores that unit: the answers hardly move, but per-tensor
int8 must cover 0..1000 with 256 levels, so every other unit of that tensor falls on one or
two levels. Runnable: `python -m tests.support.collapsing DIR` writes DIR/healthy.keras,
DIR/collapsing.keras and DIR/calibration.npy (the training images, the model's input layout).
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


def build(root: str | Path) -> CollapsingModels:
    """Train, save the healthy model, plant the outlier unit, save the collapsing one."""
    from train.quiet import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, *SHAPE)).astype("float32")
    y = (x.reshape(SAMPLES, -1) @ rng.normal(size=(int(np.prod(SHAPE)), 4))).argmax(1)
    inp = keras.Input(SHAPE)
    h = keras.layers.Flatten(name="flat")(inp)
    h = keras.layers.Dense(32, activation="relu", name="features")(h)
    h = keras.layers.Dense(16, activation="relu", name="outlier")(h)
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
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.collapsing DIR")
    built = build(sys.argv[1])
    print(f"wrote {built.healthy}, {built.collapsing}, {built.calibration}")
