"""convert: every mode on a model trained here, a foreign RGB model, failures and bad input.

Real models, real conversions, real interpreters. The agreement the convert stage writes
into each file is recomputed here from Keras and a raw ai-edge-litert interpreter, not
from the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.metadata.block import read_metadata
from edgeship.cli import app
from edgeship.convert import MODES, ConvertError, convert_model, convert_run
from edgeship.convert.calibration import balanced_indices, seeded_subset
from edgeship.convert.run import VERIFY_SEED
from tests.support.procs import one_error_line

runner = CliRunner()
VERIFY = 200
CALIBRATION = 100


def invoke(*args) -> object:
    return runner.invoke(app, ["convert", *map(str, args)])


def litert_predict(path: Path, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Float probabilities from a raw interpreter, resized to the whole batch at once."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [batch or len(x), *inp["shape"][1:]])
    interpreter.allocate_tensors()
    scale, zero = inp["quantization"]
    if inp["dtype"] != np.float32:
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"]).astype(np.float32)
    scale, zero = out["quantization"]
    return (y - zero) * scale if out["dtype"] != np.float32 else y


@pytest.fixture(scope="session")
def fashion():
    from edgeship.train.datasets import load_dataset
    from edgeship.train.errors import DatasetError

    try:
        return load_dataset("fashion-mnist")
    except DatasetError as err:  # an offline machine without the files; any other error fails
        pytest.skip(f"Fashion-MNIST not available: {err}")


@pytest.fixture(scope="session")
def own_run(tmp_path_factory, fashion):
    """An edgeship run dir (mlp, 300 images, 1 epoch) converted in every mode."""
    from edgeship.train.training import TrainConfig, train

    run = tmp_path_factory.mktemp("own") / "run"
    train(TrainConfig(model="mlp", epochs=1, limit=300, seed=1), run, data=fashion)
    events = []
    report = convert_run(
        run,
        calibration_samples=CALIBRATION,
        verify_samples=VERIFY,
        progress=lambda mode, stage, result: events.append((mode, stage)),
    )
    return run, report, events


@pytest.fixture(scope="session")
def keras_reference(own_run, fashion):
    """The Keras model's probabilities on the samples convert checks with."""
    import keras

    run, _, _ = own_run
    model = keras.saving.load_model(run / "model.keras")
    idx = seeded_subset(len(fashion.x_test), VERIFY, VERIFY_SEED)
    x = fashion.x_test[idx].astype(np.float32) / 255.0
    return x, model.predict(x, verbose=0), fashion.y_test[idx]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_and_carries_its_check(own_run, keras_reference, mode):
    run, report, _ = own_run
    x, keras_probs, labels = keras_reference
    path = run / f"model_{mode}.tflite"
    assert path.is_file()

    probs = litert_predict(path, x)  # dynamic batch: all samples in one invoke
    assert probs.shape == keras_probs.shape
    agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))

    meta = read_metadata(path)
    run_meta = json.loads((run / "model.json").read_text())
    assert {k: meta[k] for k in run_meta} == run_meta
    q = meta["quantization"]
    assert q["mode"] == mode and q["int8_io"] is False
    assert q["calibration_samples"] == (CALIBRATION if mode in ("int8", "int16x8") else 0)
    assert q["check"]["samples"] == VERIFY
    # EdgeClassifier and this raw interpreter may round a borderline input differently.
    assert abs(q["check"]["agreement"] - agreement) <= 2 / VERIFY
    assert q["check"]["max_abs_diff"] == pytest.approx(
        float(np.abs(probs - keras_probs).max()), abs=0.02
    )
    assert abs(q["check"]["accuracy"] - float(np.mean(probs.argmax(1) == labels))) <= 2 / VERIFY
    if mode == "float32":
        assert agreement == 1.0 and q["check"]["max_abs_diff"] < 1e-4
    else:
        assert agreement >= 0.9
    result = next(r for r in report.results if r.mode == mode)
    assert result.ok and result.size_bytes == path.stat().st_size
    assert result.agreement == pytest.approx(q["check"]["agreement"], abs=1e-6)


@pytest.mark.slow
def test_sizes_tensors_and_progress(own_run):
    run, report, events = own_run
    sizes = {r.mode: r.size_bytes for r in report.results}
    assert sizes["int8"] < 0.35 * sizes["float32"]
    assert sizes["dynamic"] < 0.35 * sizes["float32"]
    assert sizes["float16"] < 0.6 * sizes["float32"]
    assert report.keras_accuracy is not None and not report.failed
    assert [e for e in events if e[1] == "done"] == [(m, "done") for m in MODES]
    int8 = read_metadata(run / "model_int8.tflite")["quantization"]
    assert int8["input"]["dtype"] == "float32" and int8["output"]["dtype"] == "float32"
    int16 = read_metadata(run / "model_int16x8.tflite")["quantization"]
    assert int16["calibration_source"].startswith("fashion-mnist training set")


def test_calibration_sample_is_class_balanced():
    labels = np.repeat(np.arange(10), [500] * 9 + [3])
    idx = balanced_indices(labels, 100, seed=5)
    counts = np.bincount(labels[idx], minlength=10)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert counts[9] == 3 and counts[:9].min() >= 10
    assert np.array_equal(idx, balanced_indices(labels, 100, seed=5))


@pytest.mark.slow
def test_int8_io_through_the_cli(own_run, tmp_path, keras_reference):
    run, _, _ = own_run
    out = tmp_path / "io"
    result = invoke(
        run / "model.keras",
        "--quantize",
        "int8",
        "--int8-io",
        "--calibration-samples",
        50,
        "--verify-samples",
        100,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "int8" in result.stdout and "agree" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["model_int8.tflite"]
    q = read_metadata(out / "model_int8.tflite")["quantization"]
    assert q["int8_io"] is True and q["calibration_samples"] == 50
    assert q["input"]["dtype"] == "int8" and q["output"]["dtype"] == "int8"
    assert q["input"]["scale"] > 0 and q["output"]["scale"] > 0

    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(out / "model_int8.tflite")).get_input_details()[0]
    assert details["dtype"] == np.int8 and list(details["shape_signature"]) == [-1, 28, 28, 1]
    x, keras_probs, _ = keras_reference
    probs = litert_predict(out / "model_int8.tflite", x[:100], batch=100)
    assert np.mean(probs.argmax(1) == keras_probs[:100].argmax(1)) >= 0.9


# --- a model edgeship did not train -------------------------------------------------------


@pytest.fixture(scope="session")
def foreign(tmp_path_factory):
    """A 32x32x3 model (Rescaling, Conv2D, DepthwiseConv2D, BatchNorm, GAP) and image data."""
    import keras

    root = tmp_path_factory.mktemp("foreign")
    rng = np.random.default_rng(0)
    n, classes = 240, 3
    y = np.arange(n) % classes
    x = rng.integers(0, 80, size=(n, 32, 32, 3))
    for c in range(classes):  # class c: a bright channel c
        x[y == c, :, :, c] += 150
    x = x.clip(0, 255).astype(np.uint8)

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Rescaling(1 / 127.5, offset=-1),
            layers.Conv2D(8, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=1, batch_size=32, verbose=0)
    model_dir = root / "model"
    model_dir.mkdir()
    model.save(model_dir / "classifier.keras")
    model.save(model_dir / "classifier.h5")

    folder = root / "images"
    names = ["apple", "banana", "cherry"]
    for i in range(60):
        (folder / names[y[i]]).mkdir(parents=True, exist_ok=True)
        # another size than the model's input: convert resizes with Pillow
        Image.fromarray(x[i]).resize((40, 30)).save(folder / names[y[i]] / f"{i}.png")
    np.save(root / "calib.npy", x[:64].astype(np.float32))
    np.save(root / "wrong.npy", np.zeros((8, 28, 28, 1), np.float32))
    return {"root": root, "model_dir": model_dir, "folder": folder, "x": x, "names": names}


@pytest.mark.slow
def test_foreign_rgb_model_converts_with_an_image_folder(foreign, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        foreign["model_dir"] / "classifier.keras",
        "--calibration-data",
        foreign["folder"],
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"model_{m}.tflite" for m in MODES), "quantization"]
    )
    import keras

    # The Keras model's own answers on the raw pixels: the reference, not convert's report.
    x = foreign["x"].astype(np.float32)
    keras_probs = keras.saving.load_model(foreign["model_dir"] / "classifier.keras").predict(
        x, verbose=0
    )
    for mode in MODES:
        meta = read_metadata(out / f"model_{mode}.tflite")
        assert meta["model"] == "custom" and meta["class_names"] == foreign["names"]
        assert meta["input"]["shape"] == [32, 32, 3] and meta["input"]["color_mode"] == "rgb"
        assert meta["input"]["scale"] == 1.0 and meta["input"]["offset"] == 0.0
        q = meta["quantization"]
        assert q["check"]["source"] == "calibration data" and q["check"]["samples"] == 60
        assert q["check"]["agreement"] >= (1.0 if mode == "float32" else 0.8)
        probs = litert_predict(out / f"model_{mode}.tflite", x)
        assert probs.shape == keras_probs.shape
        agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
        if mode == "float32":
            np.testing.assert_allclose(probs, keras_probs, atol=1e-4)
        else:
            assert agreement >= 0.8, (mode, agreement)


@pytest.mark.slow
def test_foreign_h5_model_converts_with_a_npy(foreign, tmp_path):
    out = tmp_path / "out"
    report = convert_model(
        foreign["model_dir"] / "classifier.h5",
        out,
        modes="int8,float16",
        calibration_data=foreign["root"] / "calib.npy",
    )
    assert [r.mode for r in report.results] == ["float16", "int8"] and not report.failed
    assert report.calibration_samples == 64 and report.verify_samples == 64
    q = read_metadata(out / "model_int8.tflite")["quantization"]
    assert q["calibration_source"].endswith("calib.npy") and q["check"]["agreement"] >= 0.8
    # float32 was not asked for: it is converted in memory, only to size the others against
    assert report.results[1].size_vs_float32 > 0  # (a model this tiny grows as int8)


@pytest.mark.slow
def test_a_logits_model_is_compared_as_probabilities(tmp_path):
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(4)]  # no softmax
    )
    model.save(tmp_path / "logits.keras")
    report = convert_model(tmp_path / "logits.keras", tmp_path / "out", modes="float32")
    assert report.verify_source.startswith("random pixels")  # no data given at all
    assert report.results[0].agreement == 1.0 and report.results[0].max_abs_diff < 1e-4


@pytest.mark.slow
def test_a_mode_that_cannot_convert_fails_alone(tmp_path):
    """TensorFlow's converter has no int16x8 kernel for SELU's GREATER: that mode fails,
    float32 still lands. (ai-edge-quantizer leaves the op in float and succeeds.)"""
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(6, "selu"),
            keras.layers.Dense(3, "softmax"),
        ]
    )
    model.save(tmp_path / "selu.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((16, 8, 8, 1), np.float32))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "model_int16x8.tflite").write_bytes(b"stale file of an earlier model")
    result = invoke(
        tmp_path / "selu.keras",
        "--quantize",
        "float32,int16x8",
        "--engine",
        "converter",
        "--calibration-data",
        tmp_path / "calib.npy",
        "--out",
        out,
    )
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: mode int16x8 failed") and "Try int8, dynamic or float16" in line
    assert "GREATER" in line
    assert sorted(p.name for p in out.iterdir()) == ["model_float32.tflite"]


@pytest.mark.slow
def test_min_agreement_fails_the_mode_with_exit_1(tmp_path):
    """Near-uniform outputs: int8 rounds them to ties, so its top-1 cannot match Keras's."""
    import keras

    tiny = keras.initializers.RandomNormal(stddev=1e-4, seed=0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, "softmax", kernel_initializer=tiny),
        ]
    )
    model.save(tmp_path / "flat.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(1).random((100, 8, 8, 1), np.float32))
    out = tmp_path / "out"
    result = invoke(
        tmp_path / "flat.keras",
        "--quantize",
        "float32,int8",
        "--min-agreement",
        1.0,
        "--calibration-data",
        tmp_path / "calib.npy",
        "--out",
        out,
    )
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "mode int8 failed" in line and "below --min-agreement" in line
    assert sorted(p.name for p in out.iterdir()) == ["model_float32.tflite"]


# --- bad input: one line, exit 2, nothing written ----------------------------------------


def assert_clean_failure(result, out: Path, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_missing_model(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(invoke(tmp_path / "nope.keras", "--out", out), out, "not found")


def test_not_a_model(tmp_path):
    (tmp_path / "notes.keras").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    assert_clean_failure(invoke(tmp_path / "notes.keras", "--out", out), out, "Not a valid .keras")
    assert_clean_failure(invoke(tmp_path / "notes.txt", "--out", out), out, "Not a Keras model")


def test_tflite_given_as_input(tmp_path, edge_models):
    out = tmp_path / "out"
    copy = shutil.copy(edge_models["mlp_float32"], tmp_path / "model.keras")  # name lies
    for path in (edge_models["mlp_float32"], copy):
        assert_clean_failure(invoke(path, "--out", out), out, "already a TensorFlow Lite model")


def test_unknown_mode(tmp_path):
    out = tmp_path / "out"
    result = invoke(tmp_path / "any.keras", "--quantize", "int8,int4", "--out", out)
    assert_clean_failure(result, out, "Unknown quantization mode int4")


def test_int8_io_needs_the_int8_mode(tmp_path):
    out = tmp_path / "out"
    result = invoke(tmp_path / "any.keras", "--quantize", "float16", "--int8-io", "--out", out)
    assert_clean_failure(result, out, "--int8-io makes the int8 model's input and output int8")
    assert "Received: quantize=float16" in result.stderr


@pytest.mark.slow
def test_truncated_keras(foreign, tmp_path):
    data = (foreign["model_dir"] / "classifier.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_clean_failure(invoke(tmp_path / "cut.keras", "--out", out), out, "Not a valid .keras")


@pytest.mark.slow
def test_calibration_array_of_the_wrong_shape(foreign, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        foreign["model_dir"] / "classifier.keras",
        "--calibration-data",
        foreign["root"] / "wrong.npy",
        "--out",
        out,
    )
    assert_clean_failure(result, out, "does not fit the model: expected (N, 32, 32, 3)")


@pytest.mark.slow
def test_foreign_int8_without_calibration_data(foreign, tmp_path):
    out = tmp_path / "out"
    result = invoke(foreign["model_dir"] / "classifier.keras", "--quantize", "int8", "--out", out)
    assert_clean_failure(result, out, "--calibration-data")


def test_bad_numbers_and_out(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")  # never reached: options are checked first
    out = tmp_path / "out"
    for args, fragment in (
        (["--calibration-samples", 0], "--calibration-samples must be at least 1"),
        (["--verify-samples", 0], "--verify-samples must be at least 1"),
        (["--min-agreement", 99], "--min-agreement is a fraction between 0 and 1"),
    ):
        assert_clean_failure(invoke(tmp_path / "m.keras", *args, "--out", out), out, fragment)
    (tmp_path / "file").write_text("x")
    result = invoke(tmp_path / "m.keras", "--out", tmp_path / "file")
    assert result.exit_code == 2 and "--out must be a directory" in result.stderr


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory) -> Path:
    """A folder with a 3-class Keras model `m.keras` and labels files (empty, two names)."""
    import keras

    folder = tmp_path_factory.mktemp("tiny_keras")
    layers = [keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")]
    keras.Sequential([keras.Input((4, 4, 1)), *layers]).save(folder / "m.keras")
    (folder / "empty.txt").write_text("")
    (folder / "two.txt").write_text("a\nb\n")
    return folder


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--quantize", "float32,float16", "--layer-report"], "it needs the int8 or int16x8 mode"),
        (["--quantize", "int8", "--fallback-max-layers", "3"], "add --fallback (with a budget)"),
        (["--quantize", "float32", "--resize", "bogus"], "--resize must be one of stretch, crop"),
        (["--quantize", "float32", "--class-names", "a,b"], "2 class names for a model with 3"),
        (["--class-names", "a,b,c", "--labels", "{d}/two.txt"], "--class-names or --labels, not"),
        (["--quantize", "float32", "--labels", "{d}/missing.txt"], "Labels file not found"),
        (["--quantize", "float32", "--labels", "{d}/empty.txt"], "The labels file is empty"),
        (["--quantize", "float32", "--labels", "{d}/two.txt"], "2 class names for a model with 3"),
    ],
)
def test_bad_new_options_one_line_exit_2(tiny_keras, args, fragment):
    """The options of issues 11 and 12, in a real `edgeship convert` process: one line, exit 2,
    no --out folder."""
    out = tiny_keras / "out"
    argv = ["convert", tiny_keras / "m.keras", *(a.format(d=tiny_keras) for a in args)]
    line = one_error_line("edgeship", [*argv, "--out", out])
    assert line.startswith("error: ") and fragment in line, line
    assert not out.exists()


def test_modes_are_parsed_in_canonical_order():
    from edgeship.convert import parse_modes

    assert parse_modes("int8, float32,int8") == ("float32", "int8")
    assert parse_modes(None) == MODES


def test_an_edgeship_run_keeps_its_names_and_resize_rule(own_run, tmp_path):
    """Class names and the resize rule of an edgeship-trained model come from its training."""
    run, _, _ = own_run
    names = ",".join(f"c{i}" for i in range(10))
    with pytest.raises(ConvertError, match="trained by edgeship: its class names"):
        convert_model(run / "model.keras", tmp_path / "a", modes="float32", class_names=names)
    with pytest.raises(ConvertError, match="trained by edgeship on images fitted by 'stretch'"):
        convert_model(run / "model.keras", tmp_path / "b", modes="float32", resize="crop")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
