"""edgeship vs MediaPipe on the same model: `python -m studies.peers`.

For each model: MediaPipe's `vision.ImageClassifier.classify` and edgeship's
`EdgeClassifier.predict`, from one decoded RGB image (uint8 H x W x 3 at the model's size,
held in memory: no decoding, no resizing measured), interleaved call by call in one process
after a warm-up, each with its library's default threads. Reported: p50 and p90 per image in
microseconds, and edgeship / MediaPipe of the p50s. Both must name the same class.

    python -m studies.peers MODEL.tflite... [--mobilenet] [--runs N] [--json]

Models: phone-ready ones (`edgeship deploy mobile RUN --out DIR`: RGB pixels in), or any
`.tflite` MediaPipe accepts (input depth 3, uint8 or float32 with normalization metadata).
`--mobilenet` adds a MobileNet-sized model: Keras's MobileNetV2 (weights=None, 224 x 224, 10
classes), full int8 with uint8 input and output, labelled, built once (TensorFlow; about a
minute) and cached under `${EDGESHIP_CACHE:-~/.cache/edgeship}/peers/`. MediaPipe is the `dev`
extra's (`pip install mediapipe`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.native_log import filtered_native_stderr

MOBILENET_FILE = "mobilenet_v2_224_uint8.tflite"


def _cache_dir() -> Path:
    root = os.environ.get("EDGESHIP_CACHE") or Path.home() / ".cache" / "edgeship"
    return Path(root) / "peers"


def build_mobilenet(path: Path) -> Path:
    """MobileNetV2 (random weights, 224x224x3, 10 classes) as full int8, uint8 in and out."""
    import keras
    import tensorflow as tf

    from edge_runtime.files import atomic_write_bytes
    from edge_runtime.metadata.standard_write import embed_all_metadata
    from edgeship.convert.converter import saved_model

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(224, 224, 3), classes=10, classifier_activation="softmax"
    )
    pixels = keras.Input((224, 224, 3), name="pixels")
    model = keras.Model(pixels, base(keras.layers.Rescaling(1 / 127.5, -1.0)(pixels)))
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (16, 224, 224, 3)).astype(np.float32)
    with saved_model(model, (224, 224, 3)) as export_dir:
        converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([c[None]] for c in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        data = converter.convert()
    meta = {
        "model": "mobilenet_v2",
        "class_names": [f"class {i}" for i in range(10)],
        "input": {"shape": [224, 224, 3], "scale": 1.0, "offset": 0.0, "color_mode": "rgb"},
    }
    return atomic_write_bytes(path, embed_all_metadata(data, meta))


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(model: Path, runs: int, warmup: int = 20) -> dict:
    """Interleaved MediaPipe / edgeship timings on one random RGB image at the model's size."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from edge_runtime import EdgeClassifier

    ours = EdgeClassifier.load(model)
    height, width, _ = ours.input_shape
    rng = np.random.default_rng(0)
    image = np.ascontiguousarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=image)
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(model)), max_results=1
    )
    theirs_t, ours_t = [], []
    with vision.ImageClassifier.create_from_options(options) as theirs:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            result = theirs.classify(mp_image)
            t1 = time.perf_counter()
            prediction = ours.predict(image)[0]
            t2 = time.perf_counter()
            if i >= warmup:
                theirs_t.append((t1 - t0) * 1e6)
                ours_t.append((t2 - t1) * 1e6)
        top = result.classifications[0].categories[0]
    same = top.index == prediction.index and top.category_name == prediction.label
    mp_p50, ours_p50 = statistics.median(theirs_t), statistics.median(ours_t)
    return {
        "model": str(model),
        "input": f"{height}x{width}x3 {ours.input_spec.dtype.name}",
        "runs": runs,
        "mediapipe_us": {"p50": mp_p50, "p90": _p(theirs_t, 90)},
        "edgeship_us": {"p50": ours_p50, "p90": _p(ours_t, 90)},
        "ratio_p50": ours_p50 / mp_p50,
        "same_top1": bool(same),
    }


def table(rows: list[dict]) -> str:
    """The Markdown table of `measure` results."""
    lines = [
        "| model | input | MediaPipe p50 (p90) µs | edgeship p50 (p90) µs | edgeship / MediaPipe "
        "| same top-1 |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        m, e = r["mediapipe_us"], r["edgeship_us"]
        lines.append(
            f"| {'/'.join(Path(r['model']).parts[-3:])} | {r['input']} "
            f"| {m['p50']:.1f} ({m['p90']:.1f}) | {e['p50']:.1f} ({e['p90']:.1f}) "
            f"| {r['ratio_p50']:.2f}x | {'yes' if r['same_top1'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure each model; print the table (or JSON lines)."""
    parser = argparse.ArgumentParser(
        prog="python -m studies.peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="*", type=Path, help=".tflite files (RGB input)")
    parser.add_argument("--mobilenet", action="store_true", help="add MobileNetV2 uint8")
    parser.add_argument("--runs", type=int, default=300, help="timed calls per library")
    parser.add_argument("--json", action="store_true", help="one JSON object per model")
    args = parser.parse_args(argv)
    models = list(args.models)
    if args.mobilenet:
        path = _cache_dir() / MOBILENET_FILE
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            build_mobilenet(path)
        models.append(path)
    if not models:
        parser.error("pass at least one model, or --mobilenet")
    rows = []
    with filtered_native_stderr():
        for model in models:
            rows.append(measure(model, args.runs))
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    if not args.json:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
