"""Stock-style classifiers: probabilities decided from the graph, labels files, `edgeship label`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edge_runtime.classifier import EdgeClassifier
from edge_runtime.errors import LabelsError
from edge_runtime.metadata.block import CONVERSION_METADATA, list_metadata
from edge_runtime.metadata.graph import is_softmax_quantization
from edge_runtime.metadata.labels import read_labels, resolve_labels
from tests.conftest import _convert
from tests.support.procs import REPO, one_error_line

STOCK_CLASSES = 1001
STOCK_SHAPE = (16, 16, 3)


def _raw_output(path, pixels: np.ndarray) -> np.ndarray:
    """The model's own output for raw uint8 pixels (N, H, W, C), straight from the interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for image in pixels:
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """A stock-style ImageNet-like classifier: uint8 input and output (softmax quantized at
    1/256), 1001 classes, no edgeship metadata; plus a labels file whose first line is
    `background`, and a float32 logits model (no softmax) for contrast."""
    import keras

    out = tmp_path_factory.mktemp("stock")
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    calib = rng.uniform(-1, 1, size=(64, *STOCK_SHAPE)).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input(STOCK_SHAPE),
            keras.layers.Conv2D(8, 3, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            # large weights: peaked probabilities, as a trained model's are
            keras.layers.Dense(
                STOCK_CLASSES,
                activation="softmax",
                kernel_initializer=keras.initializers.RandomNormal(stddev=8.0),
            ),
        ]
    )
    stock_path = out / "stock.tflite"
    stock_path.write_bytes(_convert(model, out / "export", STOCK_SHAPE, "uint8", calib))
    logits = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    logits_path = out / "logits.tflite"
    logits_path.write_bytes(_convert(logits, out / "export2", (8, 8, 1), "float32", calib))
    names = ["background"] + [f"thing {i}" for i in range(1, STOCK_CLASSES)]
    labels = out / "labels.txt"
    labels.write_text("\n".join(names) + "\n\n")  # trailing blank lines are fine
    pixels = rng.integers(0, 256, size=(8, *STOCK_SHAPE), dtype=np.uint8)
    return {
        "model": stock_path,
        "logits": logits_path,
        "labels": labels,
        "names": names,
        "pixels": pixels,
    }


def test_stock_uint8_model_gives_its_own_probabilities(stock):
    clf = EdgeClassifier.load(stock["model"])
    assert clf.metadata is None and clf.num_classes == STOCK_CLASSES
    assert clf.output_spec.dtype == np.uint8 and clf.output_head == "SOFTMAX"
    assert clf.outputs_probabilities
    raw = _raw_output(stock["model"], stock["pixels"])  # uint8 pixels go in unchanged
    want = (raw.astype(np.float32) - clf.output_spec.zero_point) * np.float32(clf.output_spec.scale)
    got = clf.predict_proba(stock["pixels"])
    np.testing.assert_array_equal(got, want)
    preds = clf.predict(stock["pixels"])
    for p, row in zip(preds, raw, strict=True):
        assert p.index == int(row.argmax())
        assert p.confidence == pytest.approx(row.max() / 256.0)
    # the model says it is fairly sure; a second softmax would flatten that to ~1/1001
    assert max(p.confidence for p in preds) > 0.2


def test_labels_file_names_the_classes(stock):
    clf = EdgeClassifier.load(stock["model"], labels=stock["labels"])
    assert clf.class_names == tuple(stock["names"]) and clf.label(0) == "background"
    (p,) = clf.predict(stock["pixels"][0])
    assert p.label == stock["names"][p.index]
    assert [t["label"] for t in p.top_k(3)] == [stock["names"][t["index"]] for t in p.top_k(3)]
    listed = EdgeClassifier.load(stock["model"], labels=stock["names"])
    assert listed.class_names == clf.class_names


def test_labels_errors(stock, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("\n".join(stock["names"][:-1]))
    with pytest.raises(LabelsError, match=r"1000 class names for a model with 1001 outputs"):
        EdgeClassifier.load(stock["model"], labels=short)
    gap = tmp_path / "gap.txt"
    gap.write_text("a\n\nb\n")
    with pytest.raises(LabelsError, match="Line 2 .* blank"):
        read_labels(gap)
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "missing.txt")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcat\r\ndog\r\n".encode())
    assert read_labels(bom) == ("cat", "dog")
    with pytest.raises(LabelsError, match="2 class names for a model with 3"):
        resolve_labels(["a", "b"], 3)


def test_logits_model_gets_a_softmax(stock):
    clf = EdgeClassifier.load(stock["logits"])
    assert clf.output_head != "SOFTMAX" and not clf.outputs_probabilities
    x = np.random.default_rng(0).uniform(-3, 3, size=(4, 8, 8, 1)).astype(np.float32)
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(stock["logits"]))
    interp.resize_tensor_input(0, [4, 8, 8, 1])
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    logits = interp.get_tensor(interp.get_output_details()[0]["index"]).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(x), e / e.sum(axis=1, keepdims=True), atol=1e-6)


def test_softmax_quantization_rule():
    assert is_softmax_quantization("uint8", 1 / 256, 0)
    assert is_softmax_quantization("int8", 1 / 256, -128)
    assert not is_softmax_quantization("int8", 1 / 256, 0)
    assert not is_softmax_quantization("uint8", 0.1, 0)


def test_predict_cli_with_labels(stock, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(stock["pixels"][0]).save(image)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "predict",
            stock["model"],
            image,
            "--json",
            "--labels",
            stock["labels"],
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    raw = _raw_output(stock["model"], stock["pixels"][:1])[0]
    assert record["index"] == int(raw.argmax())
    assert record["label"] == stock["names"][record["index"]]
    assert record["confidence"] == pytest.approx(raw.max() / 256.0, abs=1e-6)
    line = one_error_line(
        "edge_runtime", ["predict", stock["model"], image, "--labels", tmp_path / "nope.txt"]
    )
    assert line.startswith("error: Labels file not found") and "nope.txt" in line
    from typer.testing import CliRunner

    from edgeship.cli import app

    result = CliRunner().invoke(
        app,
        ["predict", str(stock["model"]), str(image), "--json", "--labels", str(stock["labels"])],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == record  # `edgeship predict`: the same code and answer


def test_edgeship_label_round_trip(stock, tmp_path):
    model = tmp_path / "stock.tflite"
    model.write_bytes(stock["model"].read_bytes())
    before = EdgeClassifier.load(model).predict_proba(stock["pixels"])
    proc = subprocess.run(
        [sys.executable, "-m", "edgeship", "label", model, "--labels", stock["labels"]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1001 class names (background, thing 1" in proc.stdout
    clf = EdgeClassifier.load(model)  # no labels= now: the file carries them
    assert clf.class_names == tuple(stock["names"])
    np.testing.assert_array_equal(clf.predict_proba(stock["pixels"]), before)
    assert CONVERSION_METADATA in list_metadata(model.read_bytes())
    assert "scale" not in clf.metadata["input"]  # stock uint8 input: raw pixels, unchanged

    # pixel scaling for a float-input model: p * S + O
    logits = tmp_path / "logits.tflite"
    logits.write_bytes(stock["logits"].read_bytes())
    five = tmp_path / "five.txt"
    five.write_text("a\nb\nc\nd\ne\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeship",
            "label",
            logits,
            "--labels",
            five,
            "--input-scale",
            str(1 / 127.5),
            "--input-offset",
            "-1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    clf = EdgeClassifier.load(logits)
    pixels = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1) * 4
    np.testing.assert_allclose(
        clf.predict_proba(pixels), clf.predict_proba(pixels / 127.5 - 1.0), atol=1e-6
    )
    assert clf.class_names == tuple("abcde")

    # a wrong count: exit 2, one line, the file untouched
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    data = model.read_bytes()
    line = one_error_line("edgeship", ["label", model, "--labels", short])
    assert "2 class names for a model with 1001 outputs" in line
    assert model.read_bytes() == data


def test_info_says_where_probabilities_come_from(stock):
    for model, words in (
        (stock["model"], "probabilities (the model ends in SOFTMAX)"),
        (stock["logits"], "scores: a softmax is applied"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "edge_runtime", "info", model, "--labels", stock["labels"]]
            if model == stock["model"]
            else [sys.executable, "-m", "edge_runtime", "info", model],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        output = next(line for line in proc.stdout.splitlines() if line.startswith("output:"))
        assert output.endswith(words), output
        if model == stock["model"]:
            assert "classes:  1001: background, thing 1," in proc.stdout
