"""A user-style model and photo folder, for the BYO tests and the README's walkthrough.

    python -m tests.support.byo_example OUT    # writes OUT/desktop/fruit.keras, OUT/photos/

The model: RGB, non-square input (24 high, 40 wide), a `Rescaling` layer inside, 3 classes
whose output order (zebra, apple, mango) is NOT the alphabetical order of the photo folders
(apple, mango, zebra). A photo of class c (80x48, larger than the input) has a brighter colour
channel c, under noise and a random colour cast. Trained for 4 short epochs on 240 such
photos, fixed seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SHAPE = (24, 40, 3)  # H, W, C
ORDER = ["zebra", "apple", "mango"]  # the model's output order


def photo(rng: np.random.Generator, label: int, size: tuple[int, int] = (80, 48)) -> np.ndarray:
    """An (H, W, 3) uint8 photo of class `label`: channel `label` a little brighter, under
    noise and a random colour cast (so the classes overlap: accuracy is not 100 %)."""
    w, h = size
    pixels = rng.integers(0, 120, size=(h, w, 3)) + rng.normal(60, 25, size=3)
    pixels[..., label] += 35
    return pixels.clip(0, 255).astype(np.uint8)


def build(root: Path, photos_per_class: int = 15):
    """Train and save `root/desktop/fruit.keras`; write `root/photos/<class>/*.png`.
    Returns (model path, photos folder, the Keras model)."""
    import keras

    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    y = np.arange(240) % 3
    x = np.stack(
        [
            np.asarray(Image.fromarray(photo(rng, c)).resize((40, 24), Image.Resampling.BILINEAR))
            for c in y
        ]
    )
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(6, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=4, batch_size=16, verbose=0)
    model_path = root / "desktop" / "fruit.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_path)
    photos = root / "photos"
    for i in range(3 * photos_per_class):
        label = i % 3
        folder = photos / ORDER[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(rng, label)).save(folder / f"{i}.png")
    return model_path, photos, model


if __name__ == "__main__":
    model_path, photos, _ = build(Path(sys.argv[1]))
    print(f"model: {model_path}\nphotos: {photos}")
