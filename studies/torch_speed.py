"""`python -m studies.torch_speed`: PyTorch eager vs each TFLite mode, batch 1, one thread.

Two models (`tests.support.torch_models`): the small CNN trained for seconds on 2,000
Fashion-MNIST images, and the MobileNetV3-small-style network at 224x224x3 with ImageNet
mean/std. Each is saved as `.pt2`, converted by `edgeship convert` into every mode (calibrated
on 200 images), then timed in one process: PyTorch's eager call under `torch.inference_mode`
(`torch.set_num_threads(1)`, float32 NCHW in) against `EdgeClassifier.predict` (one thread,
uint8 pixels in, preprocessing included). Prints a Markdown table of batch-1 p50 in
microseconds and each mode's agreement with PyTorch on the check images.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeship.bench.measure import latency_summary, time_calls

MODES = ("float32", "dynamic", "float16", "int8", "int16x8")


def _models(root: Path, samples: int) -> list[tuple[str, str, np.ndarray, dict]]:
    """(name, spec, check images uint8 NHWC, convert options) for both models."""
    from edgeship.train.datasets import load_dataset
    from tests.support.torch_models import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        generated_images,
        mobilenet_v3_style,
        save_pt2,
        train_small_cnn,
    )

    data = load_dataset("fashion-mnist")
    cnn = train_small_cnn(data.x_train[:2000], data.y_train[:2000], epochs=2)
    np.save(root / "fashion.npy", data.x_train[2000 : 2000 + samples])
    photos = generated_images(2 * samples, 224, seed=1)
    np.save(root / "photos.npy", photos[:samples])
    return [
        (
            "small CNN 28x28x1",
            str(save_pt2(cnn, (1, 28, 28), root / "cnn.pt2")),
            data.x_test[:samples],
            {"calibration_data": root / "fashion.npy", "input_scale": 1 / 255},
        ),
        (
            "MobileNetV3-style 224x224x3",
            str(save_pt2(mobilenet_v3_style(), (3, 224, 224), root / "mobilenet.pt2")),
            photos[samples:],
            {
                "calibration_data": root / "photos.npy",
                "input_mean": list(IMAGENET_MEAN),
                "input_std": list(IMAGENET_STD),
            },
        ),
    ]


def measure(runs: int, samples: int, modes: tuple[str, ...] = MODES) -> list[dict]:
    """One row per model and format: p50/p99 batch-1 microseconds and agreement with PyTorch."""
    import torch

    from edge_runtime.classifier import EdgeClassifier
    from edgeship.convert import convert_model
    from edgeship.convert.torch_source import load_torch_module, torch_probabilities
    from edgeship.train.quiet import captured_stderr

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, spec, images, options in _models(root, samples):
            out = root / Path(spec).stem
            with contextlib.redirect_stdout(io.StringIO()), captured_stderr():
                report = convert_model(
                    spec,
                    out,
                    modes=modes,
                    calibration_samples=samples,
                    verify_samples=samples,
                    **options,
                )
            module, _ = load_torch_module(spec)
            clf_any = EdgeClassifier.load(out / f"model_{report.results[0].mode}.tflite")
            x = images.astype(np.float32) * np.asarray(
                clf_any.input_scale, np.float32
            ) + np.asarray(clf_any.input_offset, np.float32)
            reference = torch_probabilities(module, x).argmax(1)
            singles = [
                torch.from_numpy(np.ascontiguousarray(x[i : i + 1].transpose(0, 3, 1, 2)))
                for i in range(min(len(x), 50))
            ]

            def eager(t, module=module):
                with torch.inference_mode():
                    return module(t)

            lat = latency_summary(time_calls(eager, singles, runs, 10))
            rows.append(
                {
                    "model": name,
                    "format": "torch eager",
                    "p50_us": lat["p50"],
                    "p99_us": lat["p99"],
                    "agreement": 1.0,
                }
            )
            for result in report.results:
                if not result.ok:
                    rows.append(
                        {
                            "model": name,
                            "format": result.mode,
                            "p50_us": None,
                            "p99_us": None,
                            "agreement": None,
                        }
                    )
                    continue
                with captured_stderr():
                    clf = EdgeClassifier.load(out / f"model_{result.mode}.tflite", num_threads=1)
                agree = float(np.mean(clf.predict_proba(images).argmax(1) == reference))
                pics = [images[i] for i in range(min(len(images), 50))]
                lat = latency_summary(time_calls(clf.predict, pics, runs, 10))
                rows.append(
                    {
                        "model": name,
                        "format": f"tflite {result.mode}",
                        "p50_us": lat["p50"],
                        "p99_us": lat["p99"],
                        "agreement": agree,
                    }
                )
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | format | batch-1 p50 µs | p99 µs | top-1 agreement with PyTorch |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["p50_us"] is None:
            lines.append(f"| {r['model']} | {r['format']} | failed | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['format']} | {r['p50_us']:,.0f} | "
            f"{r['p99_us']:,.0f} | {r['agreement']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m studies.torch_speed", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="batch-1 calls per model")
    parser.add_argument(
        "--samples", type=int, default=200, help="calibration and check images per model"
    )
    args = parser.parse_args(argv)
    print(markdown(measure(args.runs, args.samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
