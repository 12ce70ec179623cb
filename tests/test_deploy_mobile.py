"""`edgeship deploy mobile`: phone-ready models (RGB pixels in, preprocessing in the graph)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime import EdgeClassifier
from edgeship.cli import app
from edgeship.deploy.mobile.models import as_rgb
from edgeship.train.datasets import FASHION_MNIST_CLASSES as FASHION_CLASSES

IMAGES = 300
runner = CliRunner()


@pytest.fixture(scope="module")
def test_images():
    """The first 300 Fashion-MNIST test images, uint8 (N, 28, 28, 1)."""
    from edgeship.train.datasets import load_dataset

    return load_dataset("fashion-mnist").x_test[:IMAGES]


def _indices(classifier: EdgeClassifier, images: list[Image.Image]) -> np.ndarray:
    return np.array([p.index for p in classifier.predict(images)])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("mode", ["int8", "float32"])
def test_phone_model_answers_as_the_source_model(
    fashion_runs, mobile_models, test_images, arch, mode
):
    source = EdgeClassifier.load(fashion_runs[arch] / f"model_{mode}.tflite")
    phone = EdgeClassifier.load(mobile_models[f"{arch}_{mode}"])
    assert phone.input_shape == (28, 28, 3)
    assert phone.input_spec.dtype == np.dtype(np.uint8 if mode == "int8" else np.float32)
    assert phone.class_names == FASHION_CLASSES
    assert phone.describe()["metadata"]["input"]["background"] != "dark"  # no double inversion
    for light in (False, True):
        photos = [Image.fromarray(rgb) for rgb in as_rgb(test_images, light)]
        # the source model converts each RGB photo to L and inverts light ones (--invert auto)
        agreement = float(np.mean(_indices(source, photos) == _indices(phone, photos)))
        assert agreement >= 0.995, (arch, mode, light, agreement)


def test_float32_graph_is_pillows_grayscale_and_inversion(fashion_runs, mobile_models):
    """Coloured photos, light and dark borders: the float32 phone model on RGB gives the source
    model's probabilities on Pillow's L conversion of the photo (inverted by --invert auto)."""
    rng = np.random.default_rng(3)
    photos = rng.integers(0, 256, size=(40, 28, 28, 3), dtype=np.uint8)
    photos[:20, :3], photos[:20, -3:] = 250, 240  # a light border on half of them
    photos[:20, :, :3], photos[:20, :, -3:] = 245, 235
    photos[20:30, :2], photos[20:30, -2:] = 10, 20  # a dark one on some
    phone = EdgeClassifier.load(mobile_models["mlp_float32"])
    source = EdgeClassifier.load(fashion_runs["mlp"] / "model_float32.tflite")
    expected = source.predict_proba([Image.fromarray(p) for p in photos])  # L, then auto invert
    np.testing.assert_allclose(phone.predict_proba(photos), expected, atol=1e-5)


def test_int8_phone_model_answers_as_the_source_model_on_tinted_garments(
    fashion_runs, mobile_models, test_images
):
    """Coloured photos (each garment tinted its own colour, on black): the int8 phone model's
    grey conversion weighs R, G and B as Pillow's does, so it still names what the source model
    names on Pillow's L of the same photo. (The grey photos above cannot tell R from B.)"""
    rng = np.random.default_rng(7)
    n = len(test_images)
    # saturated tints, reddish or bluish (R far from B: where the weights of R and B matter)
    strong, weak = rng.uniform(0.8, 1.0, n), rng.uniform(0.0, 0.2, n)
    reddish = rng.random(n) < 0.5
    tints = np.stack(
        [
            np.where(reddish, strong, weak),
            rng.uniform(0.1, 1.0, n),
            np.where(reddish, weak, strong),
        ],
        axis=1,
    )[:, None, None, :]
    photos = [Image.fromarray(p) for p in (test_images * tints).round().astype(np.uint8)]
    source = EdgeClassifier.load(fashion_runs["mlp"] / "model_int8.tflite")
    phone = EdgeClassifier.load(mobile_models["mlp_int8"])
    want, got = source.predict_proba(photos), phone.predict_proba(photos)
    agreement = float(np.mean(want.argmax(axis=1) == got.argmax(axis=1)))
    worst = float(np.abs(want - got).max())
    print(
        f"\nint8 phone model on {n} tinted garments: top-1 agreement {agreement:.1%}, "
        f"max probability difference {worst:.3f}"
    )
    # seen: 99.3 % and 0.020; with R and B weighed the other way round, 98.3 % and 0.250
    assert worst < 0.1 and agreement >= 0.98, (agreement, worst)


def test_cli_writes_models_and_readme(fashion_runs, tmp_path):
    out = tmp_path / "phone"
    result = runner.invoke(
        app,
        [
            "deploy",
            "mobile",
            str(fashion_runs["mlp"]),
            "--out",
            str(out),
            "--models",
            "float32,int8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "README.txt",
        "model_float32.tflite",
        "model_int8.tflite",
    ]
    readme = (out / "README.txt").read_text()
    for needle in ("MediaPipe", "Android", "iOS", "Web", "Android Studio", "28 high x 28 wide"):
        assert needle in readme
    assert "model_int8.tflite: " in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "no Keras model"),
        (["--models", "int16x8"], "Unknown or missing mode"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, fragment):
    run = tmp_path / "empty_run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"") if args else None
    out = tmp_path / "never"
    result = runner.invoke(app, ["deploy", "mobile", str(run), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert "Traceback" not in result.output
    assert not out.exists()
