"""MediaPipe's own `vision.ImageClassifier` (the `dev` extra) on what edgeship writes.

MediaPipe Tasks is one C++ implementation behind Android, iOS, the web and Python: if it names
the classes and agrees with `python -m edge_runtime predict`, a phone app does too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeship.deploy.mobile.models import as_rgb
from tests.support.procs import REPO
from tests.support.stock_metadata import NAMES, hand_packed
from tests.test_deploy_mobile import FASHION_CLASSES

IMAGES = 300
MIN_AGREEMENT = 0.995


@pytest.fixture(scope="module")
def mp():
    return pytest.importorskip("mediapipe")


def classify(mp, model: Path, images: list[Path]) -> list[tuple[str, int]]:
    """MediaPipe's top-1 (category name, index) for each image file."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(model)), max_results=1
    )
    out = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for path in images:
            top = classifier.classify(mp.Image.create_from_file(str(path)))
            category = top.classifications[0].categories[0]
            out.append((category.category_name, category.index))
    return out


def edge_predict(model: Path, images: list[Path]) -> list[tuple[str, int]]:
    """`python -m edge_runtime predict --json`: (label, index) for each image file."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "predict",
            str(model),
            *map(str, images),
            "--json",
            "--top-k",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(images)
    return [(r["label"], r["index"]) for r in records]


@pytest.fixture(scope="module")
def fashion_pngs(tmp_path_factory) -> dict[str, list[Path]]:
    """300 Fashion-MNIST test images as 28x28 RGB PNGs: {"dark": [...], "light": [...]}."""
    from edgeship.train.datasets import load_dataset

    x = load_dataset("fashion-mnist").x_test[:IMAGES]
    root = tmp_path_factory.mktemp("fashion_pngs")
    out = {}
    for background, light in (("dark", False), ("light", True)):
        paths = []
        for i, rgb in enumerate(as_rgb(x, light)):
            paths.append(root / f"{background}_{i}.png")
            Image.fromarray(rgb).save(paths[-1])
        out[background] = paths
    return out


@pytest.mark.parametrize("model", ["mlp_int8", "mlp_float32", "cnn_int8", "cnn_float32"])
def test_mediapipe_agrees_with_edge_runtime_on_phone_models(mp, mobile_models, fashion_pngs, model):
    path = mobile_models[model]
    for background, pngs in fashion_pngs.items():
        theirs = classify(mp, path, pngs)
        ours = edge_predict(path, pngs)
        assert {name for name, _ in theirs} <= set(FASHION_CLASSES)
        assert all(name == FASHION_CLASSES[i] for name, i in theirs)
        same = sum(a[1] == b[1] for a, b in zip(theirs, ours, strict=True))
        print(f"{model} {background}: MediaPipe top-1 = edge_runtime's on {same}/{len(pngs)}")
        assert same / len(pngs) >= MIN_AGREEMENT, (model, background, same)


def test_mediapipe_on_converts_int8_of_a_user_rgb_model(mp, tmp_path):
    """A user-style RGB model (Rescaling inside, class names given): convert's int8 file."""
    from typer.testing import CliRunner

    from edgeship.cli import app
    from tests.support.byo_example import ORDER, SHAPE, build

    model_path, photos, _ = build(tmp_path, photos_per_class=10)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(model_path),
            "--quantize",
            "int8",
            "--calibration-data",
            str(photos),
            "--class-names",
            ",".join(ORDER),
            "--verify-samples",
            "30",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    # photos at the model's size: resizing is the app's (and each library's) own business
    sized = []
    for i, photo in enumerate(sorted(photos.rglob("*.png"))):
        sized.append(tmp_path / f"sized_{i}.png")
        Image.open(photo).convert("RGB").resize((SHAPE[1], SHAPE[0]), Image.BILINEAR).save(
            sized[-1]
        )
    model = run / "model_int8.tflite"
    theirs, ours = classify(mp, model, sized), edge_predict(model, sized)
    assert {name for name, _ in theirs} <= set(ORDER)
    assert theirs == ours
    # deploy mobile of such a run: float32 works; int8 has no dataset to calibrate on
    phone = tmp_path / "phone"
    result = CliRunner().invoke(
        app, ["deploy", "mobile", str(run), "--out", str(phone), "--models", "int8"]
    )
    assert result.exit_code == 2 and "calibration images" in result.stderr
    assert not phone.exists()
    result = CliRunner().invoke(
        app, ["deploy", "mobile", str(run), "--out", str(phone), "--models", "float32"]
    )
    assert result.exit_code == 0, result.output
    model = phone / "model_float32.tflite"
    assert classify(mp, model, sized) == edge_predict(model, sized)


@pytest.mark.parametrize("packer", ["edgeship", "by hand"])
def test_mediapipe_names_a_stock_uint8_model(mp, edge_models, tmp_path, packer):
    from edge_runtime.metadata.standard_write import embed_all_metadata

    data = edge_models["cnn_uint8"].read_bytes()
    if packer == "edgeship":  # our writer on a model with no edgeship block (names only)
        data = embed_all_metadata(data, {"class_names": NAMES, "input": {"shape": [32, 32, 3]}})
    else:
        data = hand_packed(data, NAMES)
    model = tmp_path / "stock.tflite"
    model.write_bytes(data)
    rng = np.random.default_rng(2)
    images = []
    for i in range(20):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images[-1])
    theirs, ours = classify(mp, model, images), edge_predict(model, images)
    assert all(name == NAMES[i] for name, i in theirs)
    assert [i for _, i in theirs] == [i for _, i in ours]
    assert all(name == NAMES[i] for name, i in ours)


def test_a_model_with_an_offset_is_normalized_as_it_says(mp, edge_models, tmp_path):
    """Scale 1/127.5 and offset -1 (pixels to [-1, 1], as MobileNet's): the standard metadata
    says mean 127.5, std 127.5, and MediaPipe's scores are the model's own on
    (p - 127.5) / 127.5 (pixel 255 -> 1.0, not 3.0)."""
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.python import BaseOptions, vision

    from edge_runtime.metadata.standard import read_standard_metadata
    from edge_runtime.metadata.standard_write import embed_all_metadata

    meta = {
        "class_names": NAMES,
        "input": {"shape": [32, 32, 3], "scale": 1 / 127.5, "offset": -1.0},
    }
    data = embed_all_metadata(edge_models["cnn_float32"].read_bytes(), meta)
    std = read_standard_metadata(data)
    assert std.mean == pytest.approx((127.5,) * len(std.mean)) and len(std.mean) in (1, 3)
    assert std.std == pytest.approx((127.5,) * len(std.std))
    model = tmp_path / "offset.tflite"
    model.write_bytes(data)
    x = np.random.default_rng(4).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x[0] = 255  # the brightest pixel must become 1.0
    interp = Interpreter(model_path=str(model))
    interp.resize_tensor_input(0, [len(x), 32, 32, 3])
    interp.allocate_tensors()
    pixels = ((x - np.float32(127.5)) / np.float32(127.5)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], pixels)
    interp.invoke()
    want = interp.get_tensor(interp.get_output_details()[0]["index"])
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(model)), max_results=-1
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image, row in zip(x, want, strict=True):
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            got = classifier.classify(frame).classifications[0].categories
            scores = np.zeros(len(row), np.float32)
            for c in got:
                scores[c.index] = c.score
            np.testing.assert_allclose(scores, row, atol=1e-4)


def test_readme_snippet_runs(mp, mobile_models, fashion_pngs, tmp_path, no_tf_env):
    """The README's MediaPipe snippet, as written, on a phone-ready model and a photo, in a
    process where TensorFlow cannot be imported (a phone developer's machine has none; and
    mediapipe would otherwise import it, ~20 s, only for its docs decorators)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## On a phone or in an app") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "phone").mkdir()
    (tmp_path / "phone" / "model_int8.tflite").write_bytes(mobile_models["mlp_int8"].read_bytes())
    (tmp_path / "photo.png").write_bytes(fashion_pngs["light"][1].read_bytes())
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=no_tf_env,
    )
    assert proc.returncode == 0, proc.stderr
    name, score = proc.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    expected = edge_predict(mobile_models["mlp_int8"], [fashion_pngs["light"][1]])[0][0]
    assert name == expected and 0 < float(score) <= 1


def test_peers_benchmark_measures_both_on_the_same_answer(mp, mobile_models):
    """`python -m studies.peers` (a few runs: the figures are the docs', not asserted)."""
    from studies.peers import measure, table

    row = measure(mobile_models["cnn_int8"], runs=5, warmup=2)
    assert row["same_top1"] and row["input"] == "28x28x3 uint8"
    assert row["mediapipe_us"]["p50"] > 0 and row["edgeship_us"]["p50"] > 0
    assert "| yes |" in table([row])
