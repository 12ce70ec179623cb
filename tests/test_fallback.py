"""convert --layer-report and --fallback on a model whose int8 conversion collapses.

The model (`tests.support.collapsing`) is trained here on synthetic data in a few seconds,
then one unit of its middle Dense layer gets a bias of 1000 that the next layer ignores:
per-tensor int8 must cover 0..1000 with 256 levels, so every other unit of that tensor falls
on one or two levels. Agreements are recomputed here with a raw ai-edge-litert
interpreter, not taken from the code under test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.metadata.block import read_metadata
from edgeship.cli import app
from edgeship.convert.calibration import (
    CALIBRATION_SEED,
    DEFAULT_CALIBRATION_SAMPLES,
    seeded_subset,
)
from tests.support.collapsing import (
    SAMPLES,
    SHAPE,
    as_pixel_model,
    build,
    with_outlier,
    write_class_folders,
)
from tests.support.predictions import assert_predict_matches_desktop
from tests.test_convert import assert_clean_failure, litert_predict

runner = CliRunner()
VERIFY = 400


def invoke(*args):
    return runner.invoke(app, ["convert", *map(str, args)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fallback"))


@pytest.fixture(scope="module")
def models(built):
    """(healthy.keras, collapsing.keras, calibration .npy, samples, Keras probabilities)."""
    # convert checks a foreign model on the first --verify-samples of its calibration sample,
    # and a --fallback model also on the rest of it (which its search does not use).
    picked = seeded_subset(SAMPLES, DEFAULT_CALIBRATION_SAMPLES, CALIBRATION_SEED)
    return (
        built.healthy,
        built.collapsing,
        built.calibration,
        built.x[picked],
        built.keras_probs[picked],
    )


def agreement(path: Path, x: np.ndarray, keras_probs: np.ndarray) -> float:
    return float(np.mean(litert_predict(path, x).argmax(1) == keras_probs.argmax(1)))


def test_layer_report_ranks_the_outlier_layer_first(models, tmp_path):
    _, collapsing, calib, x, keras_probs = models
    out = tmp_path / "run"
    result = invoke(
        collapsing, "--quantize", "float32,int8", "--calibration-data", calib,
        "--verify-samples", VERIFY, "--layer-report", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # The plain int8 model does collapse (checked with a raw interpreter).
    assert agreement(out / "model_int8.tflite", x[:VERIFY], keras_probs[:VERIFY]) < 0.9
    folder = out / "quantization"
    assert {p.name for p in folder.iterdir()} == {
        "int8_layers.csv", "int8_layers.md", "int8_layers.png",
    }  # fmt: skip
    rows = list(csv.DictReader((folder / "int8_layers.csv").open()))
    assert rows[0]["layer"] == "outlier"
    assert {r["layer"] for r in rows} >= {"features", "outlier", "head"}
    top = rows[0]
    # Its own rounding looks fine; its range does not: one step is bigger than most values,
    # so a channel takes only a level or two; keeping it float restores the answers.
    assert float(top["scale"]) > 1.0
    assert float(top["levels"]) <= 2
    assert float(top["agreement_if_float"]) >= 0.98
    assert all(float(r["agreement_if_float"]) < 0.9 for r in rows[1:])
    # ... and removes nearly all of the output error (probabilities compared as the model
    # gives them: a softmax output is not softmaxed again, which would shrink every error).
    assert float(top["error_removed_if_float"]) > 0.9
    assert all(float(r["error_removed_if_float"]) < 0.1 for r in rows[1:])
    # An all-float-in-disguise row: RMSE / scale is RMSE divided by the scale.
    for r in rows:
        if r["scale"]:
            assert float(r["rmse_over_scale"]) == pytest.approx(
                float(r["rmse"]) / float(r["scale"]), rel=1e-3, abs=1e-5
            )
    md = (folder / "int8_layers.md").read_text()
    assert "| outlier | FULLY_CONNECTED |" in md
    assert (folder / "int8_layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "int8 layers, worst first: outlier" in " ".join(result.output.split())


def test_fallback_reaches_the_budget_with_a_float_layer(models, tmp_path):
    _, collapsing, calib, x, keras_probs = models
    out = tmp_path / "run"
    result = invoke(
        collapsing, "--quantize", "float32,int8", "--calibration-data", calib,
        "--verify-samples", VERIFY, "--fallback", "--min-agreement", "0.98", "--out", out,
        "--fallback-precision", "float",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = out / "model_int8.tflite"
    meta = read_metadata(model)["quantization"]
    assert meta["mode"] == "int8"
    assert "outlier" in meta["float_layers"]
    assert 1 <= len(meta["float_layers"]) < 4
    fb = meta["fallback"]
    assert fb["plain"]["agreement"] < 0.9 <= 0.98 <= fb["search"]["agreement"]
    assert fb["search"]["samples"] == VERIFY
    assert fb["held_out"]["samples"] == DEFAULT_CALIBRATION_SAMPLES - VERIFY
    # Recomputed: the search's data, and the held-out samples it did not see.
    searched = agreement(model, x[:VERIFY], keras_probs[:VERIFY])
    assert searched == pytest.approx(fb["search"]["agreement"], abs=1e-6) and searched >= 0.98
    held = agreement(model, x[VERIFY:], keras_probs[VERIFY:])
    assert held == pytest.approx(fb["held_out"]["agreement"], abs=1e-6) and held >= 0.95
    assert model.stat().st_size < (out / "model_float32.tflite").stat().st_size
    # It is an ordinary .tflite: float ops between QUANTIZE/DEQUANTIZE, int8 elsewhere.
    from ai_edge_litert.interpreter import Interpreter

    ops = Interpreter(model_path=str(model))._get_ops_details()
    types = {str(t) for op in ops if op["op_name"] == "FULLY_CONNECTED" for t in op["result_types"]}
    assert any("float32" in t for t in types) and any("int8" in t for t in types)
    flat = " ".join(result.output.split())
    assert f"int8, {len(meta['float_layers'])} layer" in flat  # "... float" may wrap
    assert "--fallback kept in float: " in flat and "held-out" in flat


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_a_healthy_model_is_unchanged_by_fallback(models, tmp_path, mode):
    healthy, _, calib, _, _ = models
    common = ["--quantize", mode, "--calibration-data", calib, "--verify-samples", VERIFY]
    plain = invoke(healthy, *common, "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    helped = invoke(
        healthy, *common, "--fallback", "--min-agreement", "0.9", "--out", tmp_path / "fb"
    )
    assert helped.exit_code == 0, helped.output
    a = (tmp_path / "plain" / f"model_{mode}.tflite").read_bytes()
    b = (tmp_path / "fb" / f"model_{mode}.tflite").read_bytes()
    assert a == b
    meta = read_metadata(tmp_path / "fb" / f"model_{mode}.tflite")["quantization"]
    assert "float_layers" not in meta


def test_an_unreachable_budget_fails_with_exit_1(models, tmp_path):
    _, collapsing, calib, _, _ = models
    out = tmp_path / "run"
    result = invoke(
        collapsing, "--quantize", "int8", "--calibration-data", calib,
        "--verify-samples", VERIFY, "--fallback", "--min-agreement", "0.98",
        "--fallback-max-layers", "1", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    flat = result.stderr.strip().splitlines()[-1]
    assert "mode int8 failed: --fallback reached agreement" in flat
    assert "short of agreement >= 98.00%" in flat
    assert not (out / "model_int8.tflite").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--quantize", "int8", "--fallback"], "--fallback keeps layers in float until a budget"),
        (
            ["--quantize", "float16", "--fallback", "--min-agreement", "0.9"],
            "--fallback works on the int8 and int16x8 modes",
        ),
        (
            ["--quantize", "int8", "--fallback", "--min-agreement", "0.9", "--int8-io"],
            "drop --int8-io",
        ),
        (["--quantize", "int8", "--max-accuracy-drop", "0.01"], "--max-accuracy-drop needs"),
        (["--quantize", "int8", "--max-accuracy-drop", "2"], "--max-accuracy-drop is a fraction"),
    ],
)
def test_bad_fallback_options_exit_2(models, tmp_path, args, fragment):
    _, collapsing, calib, _, _ = models
    out = tmp_path / "run"
    result = invoke(collapsing, *args, "--calibration-data", calib, "--out", out)
    assert_clean_failure(result, out, fragment)


@pytest.fixture(scope="module")
def pixel_run(built, tmp_path_factory):
    """The collapsing model for raw pixels, class folders, and its --fallback conversion on
    an accuracy budget: (model_int8.tflite, pixels.keras, image folder)."""
    root = tmp_path_factory.mktemp("pixels")
    model = as_pixel_model(built.collapsing, root / "pixels.keras")
    folder = write_class_folders(root / "images", built.x, built.y, built.keras_probs.shape[1])
    out = root / "run"
    result = invoke(
        model, "--quantize", "int8", "--calibration-data", folder, "--calibration-samples",
        SAMPLES, "--verify-samples", VERIFY, "--fallback", "--max-accuracy-drop", "0.02",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / "model_int8.tflite", model, folder


def test_max_accuracy_drop_with_class_folders(pixel_run):
    """Labels from one folder per class: the accuracy budget drives the search."""
    tflite, model, folder = pixel_run
    q = read_metadata(tflite)["quantization"]
    fb = q["fallback"]
    assert fb["budget"] == {"min_agreement": None, "max_accuracy_drop": 0.02}
    plain, after = fb["plain"], fb["search"]
    assert plain["keras_accuracy"] - plain["accuracy"] > 0.05  # int8 collapsed
    assert after["keras_accuracy"] - after["accuracy"] <= 0.02
    assert "outlier" in q["float_layers"]
    assert fb["held_out"]["samples"] == SAMPLES - VERIFY
    # Recomputed on every image (read back from the folders) against the labels.
    from edgeship.train.quiet import import_keras

    names = sorted(p.name for p in folder.iterdir())
    paths = sorted(folder.rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(p))[..., None] for p in paths])
    labels = np.array([names.index(p.parent.name) for p in paths])
    keras_pred = import_keras().saving.load_model(model).predict(pixels, verbose=0).argmax(1)
    pred = litert_predict(tflite, pixels.astype(np.float32)).argmax(1)
    assert np.mean(keras_pred == labels) - np.mean(pred == labels) <= 0.03


# --- int16x8 ------------------------------------------------------------------------------
# At an outlier of 1000 int16x8 is fine (its step, 1000 / 32767, is small); at 1e6 the step is
# about 30 and int16x8 collapses as int8 does at 1000.
EXTREME = 1e6


@pytest.fixture(scope="module")
def extreme(built, tmp_path_factory):
    """(the 1e6-outlier model, its plain int16x8 conversion's folder)."""
    root = tmp_path_factory.mktemp("extreme")
    model = with_outlier(built.collapsing, root / "extreme.keras", EXTREME)
    result = invoke(
        model, "--quantize", "int16x8", "--calibration-data", built.calibration,
        "--verify-samples", VERIFY, "--out", root / "plain",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return model, root / "plain"


def test_int16x8_fallback_reaches_the_budget_with_float_layers(models, extreme, tmp_path):
    _, _, calib, x, _ = models
    model, plain_dir = extreme
    from edgeship.train.quiet import import_keras

    keras_probs = import_keras().saving.load_model(model).predict(x, verbose=0)
    # Plain int16x8 collapses on this model (a raw interpreter's answers).
    assert agreement(plain_dir / "model_int16x8.tflite", x, keras_probs) < 0.5
    out = tmp_path / "run"
    result = invoke(
        model, "--quantize", "float32,int16x8", "--calibration-data", calib,
        "--verify-samples", VERIFY, "--fallback", "--min-agreement", "0.98", "--layer-report",
        "--out", out, "--fallback-precision", "float",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tflite = out / "model_int16x8.tflite"
    meta = read_metadata(tflite)["quantization"]
    assert meta["mode"] == "int16x8"
    assert "outlier" in meta["float_layers"] and len(meta["float_layers"]) < 4
    fb = meta["fallback"]
    assert fb["plain"]["agreement"] < 0.5 and fb["search"]["agreement"] >= 0.98
    searched = agreement(tflite, x[:VERIFY], keras_probs[:VERIFY])
    assert searched == pytest.approx(fb["search"]["agreement"], abs=1e-6) and searched >= 0.98
    held = agreement(tflite, x[VERIFY:], keras_probs[VERIFY:])
    assert held == pytest.approx(fb["held_out"]["agreement"], abs=1e-6) and held >= 0.95
    # Smaller than float32 (the int16x8 weights of the float ops are dropped, not kept too),
    # and an ordinary .tflite: float FULLY_CONNECTED ops next to int16 ones.
    assert tflite.stat().st_size < (out / "model_float32.tflite").stat().st_size
    from ai_edge_litert.interpreter import Interpreter

    ops = Interpreter(model_path=str(tflite))._get_ops_details()
    types = {str(t) for op in ops if op["op_name"] == "FULLY_CONNECTED" for t in op["result_types"]}
    assert any("float32" in t for t in types) and any("int16" in t for t in types)
    # edge_runtime gives the raw interpreter's answers.
    from edge_runtime.classifier import EdgeClassifier

    probs = EdgeClassifier.load(tflite).predict_proba(x)
    np.testing.assert_allclose(probs, litert_predict(tflite, x), atol=1e-6)
    # The layer report ranks the outlier first and says how much of the error it removes.
    rows = list(csv.DictReader((out / "quantization" / "int16x8_layers.csv").open()))
    assert rows[0]["layer"] == "outlier" and rows[0]["kept_float"] == "True"
    assert float(rows[0]["agreement_if_float"]) >= 0.98
    assert float(rows[0]["error_removed_if_float"]) > 0.9
    assert all(r["error_removed_if_float"] != "" for r in rows)
    assert all(float(r["error_removed_if_float"]) < 0.5 for r in rows[1:])
    flat = " ".join(result.output.split())
    assert "int16x8, 2 layers" in flat and "int16x8 --fallback kept in float: " in flat


def test_int16x8_unreachable_budget_fails_with_exit_1(models, extreme, tmp_path):
    _, _, calib, _, _ = models
    out = tmp_path / "run"
    result = invoke(
        extreme[0], "--quantize", "int16x8", "--calibration-data", calib,
        "--verify-samples", VERIFY, "--fallback", "--min-agreement", "0.98",
        "--fallback-max-layers", "1", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    flat = result.stderr.strip().splitlines()[-1]
    assert "mode int16x8 failed: --fallback reached agreement" in flat
    assert not (out / "model_int16x8.tflite").exists()


def test_partial_int16x8_with_every_op_float_matches_keras(built, extreme, tmp_path):
    """The flatbuffer edit itself: nothing chosen gives the plain bytes back; everything
    chosen gives a float model (only the input's int16 rounding left) that agrees with Keras."""
    from edgeship.convert.converter import saved_model
    from edgeship.convert.partial16 import PartialInt16x8
    from edgeship.train.quiet import import_keras

    keras_model = import_keras().saving.load_model(extreme[0])
    x = built.x[:200]
    with saved_model(keras_model, SHAPE) as export_dir:
        partial = PartialInt16x8.convert(export_dir, built.x)
    assert partial.quantize(()) == partial.plain
    every = partial.quantize(partial.node_names())
    path = tmp_path / "every.tflite"
    path.write_bytes(every)
    np.testing.assert_allclose(
        litert_predict(path, x), keras_model.predict(x, verbose=0), atol=2e-3
    )
    # Graphs that do not line up op for op (here: the pixel model has a Rescaling in front)
    # are refused, never edited.
    from edgeship.convert.converter import ModeConversionError

    pixels = as_pixel_model(extreme[0], tmp_path / "pixels.keras")
    with saved_model(import_keras().saving.load_model(pixels), SHAPE) as export_dir:
        other = PartialInt16x8.convert(export_dir, built.x * 255)
    with pytest.raises(ModeConversionError, match="do not line up"):
        PartialInt16x8(partial.plain, other.calibrated)


# --- the partly-float model on the deploy targets' runtimes ---------------------------------


@pytest.fixture(scope="module")
def pixel16_run(built, extreme, pixel_run, tmp_path_factory):
    """The 1e6-outlier model for raw pixels, its int16x8 --fallback conversion on the class
    folders: model_int16x8.tflite."""
    root = tmp_path_factory.mktemp("pixels16")
    model = as_pixel_model(extreme[0], root / "pixels16.keras")
    out = root / "run"
    result = invoke(
        model, "--quantize", "int16x8", "--calibration-data", pixel_run[2],
        "--calibration-samples", SAMPLES, "--verify-samples", VERIFY, "--fallback",
        "--min-agreement", "0.98", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tflite = out / "model_int16x8.tflite"
    assert "outlier" in read_metadata(tflite)["quantization"]["float_layers"]
    return tflite


@pytest.mark.slow
@pytest.mark.emulated
@pytest.mark.parametrize("run", ["pixel_run", "pixel16_run"])
def test_fallback_model_predicts_on_the_emulated_pi(arm64_python, run, request, tmp_path):
    """Raspberry Pi OS arm64 (qemu) with ai-edge-litert: the same answers as the desktop
    (the int8 and the int16x8 fallback models)."""
    model = request.getfixturevalue(run)
    model = model[0] if isinstance(model, tuple) else model
    assert_predict_matches_desktop(arm64_python, model, SHAPE, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("run", "atol"), [("pixel_run", 1e-6), ("pixel16_run", 1e-3)])
def test_fallback_model_predicts_on_tflite_runtime(tflite_env, run, atol, request, tmp_path):
    """tflite-runtime 2.14 (the armhf target's runtime): the same answers as ai-edge-litert.

    int8 to the printed digit. int16x8 kernels are not bit-identical between tflite-runtime
    2.14 and LiteRT 2.3, fallback or not (plain int16x8 outputs of the outlier-1000 model
    differ by up to 100 steps of 1/32768, 0.003): the same classes, confidences within 1e-3."""
    model = request.getfixturevalue(run)
    model = model[0] if isinstance(model, tuple) else model
    assert_predict_matches_desktop(
        tflite_env,
        model,
        SHAPE,
        tmp_path,
        env_args=("--backend", "tflite_runtime"),
        desktop_args=("--backend", "ai_edge_litert"),
        atol=atol,
    )
