"""From a phone photo to an answer: `python -m studies.photo_speed`.

Three measurements (docs/photos.md holds the figures and how to read them):
1. **Speed**: photo -> answer for a 3 MP and a 12 MP JPEG on the int8 MLP, CNN and a
   MobileNetV2-sized model, medians of interleaved runs, in one process:
   - *before*: the full decode (`load_image` without a size, `preprocess_image(to_size=False)`,
     `EdgeClassifier.predict`), as edgeship did until decode to size;
   - *after*: `edge_runtime.image.stages.classify_photo` (what `serve` runs: read, decode to the
     model's size, preprocess, invoke, postprocess);
   - *floor*: decode at the JPEG scale (`Image.draft`) + convert + resize + the raw
     interpreter's set_tensor / invoke / get_tensor, nothing else. Goal: after <= 1.15x floor.
2. **Agreement** of the top-1 answer, full decode vs decode to size, on photo-like images:
   Fashion-MNIST test images (MLP and CNN) and the BYO-style fruit photos (fruit model),
   each upscaled to 3 MP and 12 MP JPEGs; and through the page in chromium (upload scaled in
   the browser) vs `predict` on the original file.
3. **Upload**: the page's bytes posted and time to the answer for a 12 MP photo, the browser
   throttled to a 20 Mbit/s link (CDP `Network.emulateNetworkConditions`), before (the photo
   as it is: `?margin=0`) and after (scaled in the browser).

Models and photos are built once and cached (`studies.photo_models`). Prints one JSON
object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_runtime.native_log import filtered_native_stderr
from studies.photo_models import SIZES, fruit_photos, models, phone_jpeg, scene

GOAL = 1.15


def _floor(clf, interp, path: Path) -> int:
    """Decode at the JPEG's scale, convert, resize, invoke: nothing else (the raw interpreter,
    float input scaled as the metadata says)."""
    h, w, c = clf.input_shape
    with Image.open(path) as img:
        img.draft(img.mode, (w, h))
        small = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(small, dtype=np.uint8).reshape(1, h, w, c)
    inp = interp.get_input_details()[0]
    values = (
        clf._lut.take(x)
        if inp["dtype"] != np.float32
        else (x * np.float32(clf.input_scale) + np.float32(clf.input_offset))
    )
    interp.set_tensor(inp["index"], values.astype(inp["dtype"], copy=False))
    interp.invoke()
    return int(interp.get_tensor(interp.get_output_details()[0]["index"]).argmax())


def _before(clf, path: Path) -> int:
    from edge_runtime.image.preprocess import load_image, preprocess_image

    with load_image(path, max_pixels=clf.max_pixels) as img:
        pixels = preprocess_image(
            img,
            clf.input_shape,
            invert=clf.invert,
            background=clf.background,
            resize=clf.resize_rule,
            to_size=False,
        )
    return clf.predict(pixels)[0].index


def _after(clf, path: Path) -> int:
    from edge_runtime.image.stages import classify_photo

    return classify_photo(clf, path)[0].index


def speed(model_paths: dict[str, Path], folder: Path, runs: int) -> list[dict[str, Any]]:
    """Median ms of before / after / floor per model and photo size, interleaved runs."""
    from edge_runtime.backends import load_backend
    from edge_runtime.classifier import EdgeClassifier

    rows = []
    for size_name, size in SIZES.items():
        path = folder / f"speed_{size[0]}x{size[1]}.jpg"
        path.write_bytes(phone_jpeg(scene(), size))
        for name in ("MLP", "CNN", "MobileNetV2"):
            with filtered_native_stderr():
                clf = EdgeClassifier.load(model_paths[name])
                interp = load_backend(None).make_interpreter(model_paths[name].read_bytes(), None)
                interp.allocate_tensors()
            ways = {
                "before": partial(_before, clf, path),
                "after": partial(_after, clf, path),
                "floor": partial(_floor, clf, interp, path),
            }
            times: dict[str, list[float]] = {k: [] for k in ways}
            for _ in range(2):  # warm-up
                for call in ways.values():
                    call()
            for _ in range(runs):
                for key, call in ways.items():
                    t0 = time.perf_counter()
                    call()
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append(
                {
                    "photo": f"{size_name} JPEG {size[0]}x{size[1]}",
                    "photo_mb": round(path.stat().st_size / 1e6, 2),
                    "model": name,
                    "input": list(clf.input_shape),
                    "before_ms": round(med["before"], 1),
                    "after_ms": round(med["after"], 1),
                    "floor_ms": round(med["floor"], 1),
                    "speedup": round(med["before"] / med["after"], 2),
                    "after_over_floor": round(med["after"] / med["floor"], 3),
                    "goal_met": med["after"] / med["floor"] <= GOAL,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def agreement_photos(fashion: int, fruit: int) -> dict[str, list[Path]]:
    """{"fashion": [...], "fruit": [...]} JPEG files: each source image at 3 MP and 12 MP
    (made once, kept in the cache: a 12 MP JPEG takes a while to make)."""
    from edge_runtime.files import atomic_write_bytes
    from edgeship.train.datasets import load_fashion_mnist
    from studies.photo_models import cache_dir

    folder = cache_dir() / "photos"
    folder.mkdir(parents=True, exist_ok=True)

    x = load_fashion_mnist(None).x_test[:fashion]
    out: dict[str, list[Path]] = {"fashion": [], "fruit": []}
    sources = [("fashion", f"fm{i:04d}", img[..., 0]) for i, img in enumerate(x)]
    by_number = sorted(fruit_photos().rglob("*.png"), key=lambda q: int(q.stem))  # classes mixed
    for n, path in enumerate(by_number[:fruit]):
        sources.append(("fruit", f"{path.parent.name}_{n:03d}", np.asarray(Image.open(path))))
    for kind, stem, small in sources:
        for size_name, size in SIZES.items():
            path = folder / f"{stem}_{size_name.replace(' ', '')}.jpg"
            if not path.exists():
                atomic_write_bytes(path, phone_jpeg(small, size, seed=len(out[kind]), quality=90))
            out[kind].append(path)
    return out


def agreement(model_paths: dict[str, Path], photos: dict[str, list[Path]]) -> list[dict]:
    """Top-1 equal, full decode vs decode to size, per model and photo size."""
    from edge_runtime.classifier import EdgeClassifier

    rows = []
    for name, kind in (("MLP", "fashion"), ("CNN", "fashion"), ("fruit", "fruit")):
        with filtered_native_stderr():
            clf = EdgeClassifier.load(model_paths[name])
        for size_name in SIZES:
            tag = size_name.replace(" ", "")
            chosen = [p for p in photos[kind] if p.stem.endswith(tag)]
            same = sum(_before(clf, p) == _after(clf, p) for p in chosen)
            rows.append(
                {
                    "model": name,
                    "photos": f"{kind} at {size_name}",
                    "n": len(chosen),
                    "equal": same,
                    "agreement": round(same / len(chosen), 4),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the measurements; print (and write) the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m studies.photo_speed")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per way (median)")
    parser.add_argument("--fashion", type=int, default=100, help="Fashion-MNIST images")
    parser.add_argument("--fruit", type=int, default=45, help="BYO-style fruit photos")
    parser.add_argument(
        "--page-photos",
        type=int,
        default=20,
        help="12 MP photos sent through the page for its agreement",
    )
    parser.add_argument(
        "--page-margins",
        default="4",
        help="the page's upload margins to measure agreement at, e.g. 1,2,4",
    )
    parser.add_argument("--skip", default="", help="comma list of speed,agreement,page")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    model_paths = models()
    report: dict[str, Any] = {"goal_after_over_floor": GOAL}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "speed" not in skip:
            report["speed"] = speed(model_paths, folder, args.runs)
        if "agreement" not in skip or "page" not in skip:
            photos = agreement_photos(args.fashion, args.fruit)
        if "agreement" not in skip:
            report["agreement"] = agreement(model_paths, photos)
        if "page" not in skip:
            from studies.photo_page import page_measurements

            margins = tuple(int(m) for m in args.page_margins.split(","))
            report["page"] = page_measurements(
                model_paths, photos, args.page_photos, folder, margins
            )
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
