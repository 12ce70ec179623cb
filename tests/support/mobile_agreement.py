"""How often a phone-ready model names what its source model names, on Fashion-MNIST photos.

    python -m tests.support.mobile_agreement RUN PHONE_DIR [N]

For each mode with both `RUN/model_<mode>.tflite` and `PHONE_DIR/model_<mode>.tflite`: the
first N test images (default all 10000) as dark- and light-background RGB PIL images, through
`EdgeClassifier` on each model (the source converts to L and inverts light photos in Pillow;
the phone model does both in its graph). Prints one Markdown row per mode and background.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def agreement(source: Path, phone: Path, images: np.ndarray, light: bool) -> tuple[int, int]:
    """(top-1 matches, images) of the two models on `images` shown as RGB photos."""
    from edge_runtime import EdgeClassifier
    from edgeship.deploy.mobile.models import as_rgb

    photos = [Image.fromarray(p) for p in as_rgb(images, light)]
    a = [p.index for p in EdgeClassifier.load(source).predict(photos)]
    b = [p.index for p in EdgeClassifier.load(phone).predict(photos)]
    return int(np.sum(np.array(a) == np.array(b))), len(photos)


def main(argv: list[str]) -> None:
    """Print the agreement table."""
    from edgeship.train.datasets import load_dataset

    run, phone_dir = Path(argv[0]), Path(argv[1])
    n = int(argv[2]) if len(argv) > 2 else 10000
    images = load_dataset("fashion-mnist").x_test[:n]
    print("| model | background | top-1 equal |")
    print("|---|---|---:|")
    for phone in sorted(phone_dir.glob("model_*.tflite")):
        source = run / phone.name
        if not source.is_file():
            continue
        for light in (False, True):
            same, total = agreement(source, phone, images, light)
            what = "light" if light else "dark"
            print(f"| {phone.name} | {what} | {same}/{total} ({100 * same / total:.2f} %) |")


if __name__ == "__main__":
    main(sys.argv[1:])
