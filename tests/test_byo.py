"""Bring your own model and photos: convert -> bench --test-data, phone-style photos.

The user's model (`tests/support/byo_example.py`): RGB, non-square input (24 high, 40 wide),
a `Rescaling` layer inside, 3 classes whose output order (zebra, apple, mango) is NOT the
alphabetical order of the photo folders (apple, mango, zebra).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.classifier import EdgeClassifier
from edge_runtime.image.preprocess import load_and_preprocess
from edge_runtime.metadata.block import read_metadata
from edgeship.cli import app
from tests.support.byo_example import ORDER, SHAPE, build
from tests.support.byo_example import photo as _photo

pytestmark = pytest.mark.slow

runner = CliRunner()
FAST = [
    "--runs",
    "5",
    "--warmup",
    "1",
    "--batch",
    "8",
    "--predict-runs",
    "2",
    "--no-memory",
    "--no-plots",
]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    model_path, photos, model = build(root)
    return {"root": root, "model": model_path, "photos": photos, "keras": model}


@pytest.fixture(scope="module")
def run(byo):
    """`edgeship convert` of the desktop model, calibrated on the photos, named in its order."""
    run = byo["root"] / "run"
    result = cli(
        "convert",
        byo["model"],
        "--quantize",
        "float32,int8",
        "--calibration-data",
        byo["photos"],
        "--class-names",
        ",".join(ORDER),
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    return run


def _keras_accuracy_on(model, photos) -> float:
    """Keras's own accuracy on the photo folder, each photo prepared like the runtime does."""
    xs, ys = [], []
    for label, name in enumerate(ORDER):
        for path in sorted((photos / name).iterdir()):
            xs.append(load_and_preprocess(path, SHAPE, invert="no"))
            ys.append(label)
    probs = model.predict(np.stack(xs).astype(np.float32), verbose=0)
    return float(np.mean(probs.argmax(1) == np.asarray(ys)))


def test_convert_then_bench_with_the_users_photos(byo, run):
    meta = read_metadata(run / "model_int8.tflite")
    assert meta["class_names"] == ORDER and meta["input"]["shape"] == list(SHAPE)
    assert meta["source_model"]["path"] == str(byo["model"].resolve())
    assert not (run / "model.keras").exists()  # the desktop model stays where it is

    result = cli("bench", run, "--test-data", byo["photos"], *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "report.json").read_text())
    assert report["dataset"]["class_names"] == ORDER and report["dataset"]["images"] == 45
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"keras", "float32", "int8"}
    assert models["keras"]["path"] == str(byo["model"].resolve())
    want = _keras_accuracy_on(byo["keras"], byo["photos"])
    assert 0.5 < want < 1.0  # better than chance (1/3), not trivially perfect
    assert models["keras"]["accuracy"] == pytest.approx(want)
    assert models["float32"]["accuracy"] == pytest.approx(want)
    assert models["float32"]["agreement"] == 1.0
    # convert's own check labelled the photos by the model's order too
    check = read_metadata(run / "model_float32.tflite")["quantization"]["check"]
    assert check["accuracy"] == pytest.approx(want)
    assert np.asarray(models["int8"]["confusion_matrix"]).sum() == 45
    # photo -> answer from the 45 files on disk, per TFLite variant, beside the tensor latency
    for name in ("float32", "int8"):
        photo = models[name]["photo_latency_us"]
        assert photo["photos"] == 45 and 0 < photo["p50"] <= photo["p99"]
    assert "photo_latency_us" not in models["keras"]
    table = (run / "bench" / "report.md").read_text()
    assert "photo → answer p50 ms" in table.splitlines()[4]
    assert f"{models['int8']['photo_latency_us']['p50'] / 1e3:.2f} |" in table

    # the same photos as an .npz (labels in the model's order), and --keras named explicitly
    xs, ys = [], []
    for label, name in enumerate(ORDER):
        for path in sorted((byo["photos"] / name).iterdir()):
            xs.append(load_and_preprocess(path, SHAPE, invert="no"))
            ys.append(label)
    npz = byo["root"] / "test.npz"
    np.savez(npz, x=np.stack(xs), y=np.asarray(ys))
    result = cli(
        "bench",
        run,
        "--test-data",
        npz,
        "--keras",
        byo["model"],
        "--only",
        "float32",
        *FAST,
        "--out",
        byo["root"] / "bench2",
    )
    assert result.exit_code == 0, result.output
    report2 = json.loads((byo["root"] / "bench2" / "report.json").read_text())
    assert [m["accuracy"] for m in report2["models"]] == pytest.approx([want, want])
    assert report2["models"][1]["photo_latency_us"] is None  # an .npz holds no photo files


def test_a_folder_that_names_no_class_is_one_error_line(byo, run, tmp_path):
    photos = tmp_path / "photos"
    (photos / "kiwi").mkdir(parents=True)
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(photos / "kiwi" / "k.png")
    result = cli("bench", run, "--test-data", photos, *FAST, "--out", tmp_path / "bench")
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Test-data folder 'kiwi' names no class") and "zebra" in line
    result = cli(
        "convert",
        byo["model"],
        "--quantize",
        "float32",
        "--class-names",
        "a,b",
        "--out",
        tmp_path / "run2",
    )
    assert result.exit_code == 2 and "2 class names for a model with 3 outputs" in result.stderr


def test_a_stock_tflite_only_run_benches_without_keras(byo, tmp_path):
    """A run holding only a .tflite without edgeship metadata: --test-data and --labels."""
    import tensorflow as tf

    run = tmp_path / "stock"
    run.mkdir()
    conv = tf.lite.TFLiteConverter.from_keras_model(byo["keras"])
    (run / "fruit.tflite").write_bytes(conv.convert())
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(ORDER) + "\n")
    npz = tmp_path / "t.npz"
    rng = np.random.default_rng(9)
    y = np.arange(12) % 3
    x = np.stack([np.asarray(Image.fromarray(_photo(rng, c)).resize((40, 24))) for c in y])
    np.savez(npz, x=x, y=y)
    result = cli("bench", run, "--test-data", npz, "--labels", labels, *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["fruit"]
    assert report["dataset"]["class_names"] == ORDER
    probs = EdgeClassifier.load(run / "fruit.tflite").predict_proba(x)
    assert report["models"][0]["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == y)))


def test_phone_style_photos_classify_like_their_upright_rgb(run, tmp_path):
    """EXIF-rotated JPEG, RGBA PNG, CMYK JPEG, 16-bit PNG: the same input as the plain RGB."""
    clf = EdgeClassifier.load(run / "model_float32.tflite")
    rng = np.random.default_rng(21)
    ramp = np.linspace(0, 120, 80)[None, :, None]  # dark left, bright right: rotation shows
    for label in range(3):
        upright = np.clip(_photo(rng, label) * 0.5 + ramp, 0, 255).astype(np.uint8)  # H48 W80
        ref = clf.predict(Image.fromarray(upright))[0]
        # 1. a phone's JPEG: pixels stored rotated, EXIF orientation 6 (rotate 90 CW to view)
        stored = np.ascontiguousarray(np.rot90(upright, k=1))  # what the sensor wrote
        exif = Image.Exif()
        exif[0x0112] = 6
        phone, plain = tmp_path / f"phone_{label}.jpg", tmp_path / f"upright_{label}.jpg"
        Image.fromarray(stored).save(phone, quality=98, exif=exif)
        Image.fromarray(upright).save(plain, quality=98)
        as_viewed = load_and_preprocess(phone, SHAPE, invert="no").astype(float)
        want = load_and_preprocess(plain, SHAPE, invert="no").astype(float)
        ignoring_exif = np.asarray(Image.fromarray(stored).resize((40, 24))).astype(float)
        assert np.abs(as_viewed - want).mean() < 3 < np.abs(ignoring_exif - want).mean()
        got, plain_pred = clf.predict(phone)[0], clf.predict(plain)[0]
        assert got.index == plain_pred.index
        np.testing.assert_allclose(got.probabilities, plain_pred.probabilities, atol=0.05)
        # 2. RGBA PNG, fully opaque: exactly the same pixels
        rgba = tmp_path / f"rgba_{label}.png"
        alpha = np.full(upright.shape[:2], 255, np.uint8)
        Image.fromarray(np.dstack([upright, alpha]), "RGBA").save(rgba)
        np.testing.assert_array_equal(clf.predict(rgba)[0].probabilities, ref.probabilities)
        # 3. a CMYK JPEG of the same picture
        cmyk = io.BytesIO()
        Image.fromarray(upright).convert("CMYK").save(cmyk, "JPEG", quality=98)
        cmyk_img = Image.open(io.BytesIO(cmyk.getvalue()))
        assert cmyk_img.mode == "CMYK"
        np.testing.assert_allclose(
            clf.predict(cmyk_img)[0].probabilities, ref.probabilities, atol=0.05
        )
    # 4. a 16-bit grayscale PNG is scaled to 8 bits, not clipped to white
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((48, 80), 40000, np.uint16)).save(gray16)
    pixels = load_and_preprocess(gray16, SHAPE, invert="no")
    assert pixels.shape == SHAPE and int(pixels.mean()) == round(40000 / 65535 * 255)


def test_crop_resize_rule_is_recorded_and_applied(byo, tmp_path):
    from PIL import ImageOps

    out = tmp_path / "run"
    result = cli(
        "convert",
        byo["model"],
        "--quantize",
        "float32",
        "--resize",
        "crop",
        "--calibration-data",
        byo["photos"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert read_metadata(out / "model_float32.tflite")["input"]["resize"] == "crop"
    clf = EdgeClassifier.load(out / "model_float32.tflite")
    ramp = np.linspace(0, 200, 96)[None, :, None]
    square = np.clip(_photo(np.random.default_rng(1), 0, size=(96, 96)) * 0.3 + ramp, 0, 255)
    path = tmp_path / "square.png"
    Image.fromarray(square.astype(np.uint8)).save(path)
    cropped = np.asarray(ImageOps.fit(Image.open(path), (40, 24), Image.Resampling.BILINEAR))
    stretched = np.asarray(Image.open(path).resize((40, 24), Image.Resampling.BILINEAR))
    assert np.abs(cropped.astype(int) - stretched).mean() > 2  # the rules differ here
    np.testing.assert_array_equal(
        clf.predict(path)[0].probabilities, clf.predict(cropped)[0].probabilities
    )
    result = cli(
        "convert",
        byo["model"],
        "--quantize",
        "float32",
        "--resize",
        "squash",
        "--out",
        tmp_path / "bad",
    )
    assert result.exit_code == 2 and "--resize must be one of stretch, crop" in result.stderr
