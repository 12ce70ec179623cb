"""A photo's trip to an answer, stage by stage: read, decode, preprocess, invoke, postprocess.

`classify_photo` is what `serve` runs per upload (and `bench --image` times): the classifier's
own steps, with a clock read between each, so the stage times add up to the whole.
`photo_bench` times it `runs` times on one photo: p50 and p99 per stage and of the total.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.classifier import EdgeClassifier
from edge_runtime.image.preprocess import load_image, needed_size
from edge_runtime.model_bounds import DEFAULT_MAX_MODEL_MB
from edge_runtime.prediction import Prediction

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["STAGES", "PhotoBench", "classify_photo", "photo_bench"]

STAGES = ("read", "decode", "preprocess", "invoke", "postprocess")


def classify_photo(
    clf: EdgeClassifier,
    source: bytes | str | os.PathLike[str],
    *,
    max_decoded_bytes: int | None = None,
) -> tuple[Prediction, dict[str, float]]:
    """One photo (its bytes, or a file to read) -> its prediction and each stage's seconds.

    The JPEG decodes at the model's size (`load_image(size=...)`), then the classifier
    prepares it as `predict` does (its resize rule, invert, scaling)."""
    clock = time.perf_counter
    t0 = clock()
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    t1 = clock()
    img = load_image(
        data,
        max_pixels=clf.max_pixels,
        size=needed_size(clf.input_shape) if clf.decode_to_size else None,
        max_decoded_bytes=max_decoded_bytes,
    )
    t2 = clock()
    try:
        pixels = clf._image(img, None)
    finally:
        img.close()
    t3 = clock()
    raw = clf._invoke(pixels[None])
    t4 = clock()
    row = clf._probabilities(raw)[0]
    i = int(row.argmax())
    pred = Prediction(i, clf.class_names[i], row.item(i), row, clf.class_names)
    t5 = clock()
    seconds = {"read": t1 - t0, "decode": t2 - t1, "preprocess": t3 - t2}
    seconds.update(invoke=t4 - t3, postprocess=t5 - t4)
    return pred, seconds


@dataclass(frozen=True)
class PhotoBench:
    """What `python -m edge_runtime bench MODEL --image PHOTO --json` prints (microseconds)."""

    model: str
    image: str
    runs: int
    warmup: int
    label: str
    image_size: list[int]
    stages_us: dict[str, dict[str, float]]  # stage and "total" -> {"p50", "p99", "mean"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "model": self.model,
            "image": self.image,
            "runs": self.runs,
            "warmup": self.warmup,
            "label": self.label,
            "image_size": self.image_size,
            "stages_us": self.stages_us,
        }


def _stats(seconds: npt.NDArray[np.float64]) -> dict[str, float]:
    us = seconds * 1e6
    p50, p99 = np.percentile(us, [50, 99])
    mean = float(us.mean())
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "mean": round(mean, 1)}


def photo_bench(
    model_path: str | os.PathLike[str],
    image: str | os.PathLike[str],
    *,
    runs: int = 50,
    warmup: int = 3,
    threads: int | None = None,
    backend: str | None = None,
    full_decode: bool = False,
    max_model_mb: float = DEFAULT_MAX_MODEL_MB,
) -> PhotoBench:
    """Time `classify_photo` on the photo file `runs` times: each stage and the total, timed
    apart (the total around the whole call), so their agreement can be checked."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs >= 1, warmup >= 0 required. Received: runs={runs}, warmup={warmup}")
    clf = EdgeClassifier.load(
        model_path, num_threads=threads, backend=backend, max_model_mb=max_model_mb
    )
    clf.decode_to_size = not full_decode
    pred, _ = classify_photo(clf, image)  # a bad image fails here, before any timing
    for _ in range(warmup):
        classify_photo(clf, image)
    table = np.empty((runs, len(STAGES) + 1), dtype=np.float64)
    clock = time.perf_counter
    for n in range(runs):
        t0 = clock()
        _, seconds = classify_photo(clf, image)
        table[n, -1] = clock() - t0
        table[n, :-1] = [seconds[s] for s in STAGES]
    names = (*STAGES, "total")
    from PIL import Image

    with Image.open(image) as img:
        size = list(img.size)
    return PhotoBench(
        model=str(model_path),
        image=str(image),
        runs=runs,
        warmup=warmup,
        label=pred.label,
        image_size=size,
        stages_us={name: _stats(table[:, k]) for k, name in enumerate(names)},
    )
