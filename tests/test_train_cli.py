"""`edgeship train` end to end through the CLI, on the real Fashion-MNIST and small folders."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.train.datasets import find_fashion_mnist

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["train", *map(str, args)])


def assert_clean_failure(result, out, fragment):
    """Exit 2, one line on stderr naming the problem, no traceback, nothing written."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()  # not even an empty folder


@pytest.fixture(scope="module")
def fashion_dir():
    return find_fashion_mnist(download=None)


@pytest.mark.slow
def test_train_limit_writes_model_and_metadata(tmp_path, fashion_dir):
    out = tmp_path / "run"
    result = run("--limit", 600, "--epochs", 1, "--seed", 3, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["schema_version"] == 1 and meta["model"] == "mlp"
    assert meta["class_names"][0] == "T-shirt/top" and len(meta["class_names"]) == 10
    assert meta["input"] == {
        "shape": [28, 28, 1],
        "dtype": "float32",
        "scale": pytest.approx(1 / 255),
        "offset": 0.0,
        "color_mode": "grayscale",
        "background": "dark",
    }
    assert meta["dataset"]["name"] == "fashion-mnist"
    assert meta["dataset"]["source"] == str(fashion_dir)
    assert meta["dataset"]["train_size"] == 600 and meta["dataset"]["test_size"] == 10000
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 3
    assert meta["training"]["optimizer"] == "adam" and meta["training"]["learning_rate"] == 1e-3
    assert meta["training"]["learning_rate_schedule"] == "constant"  # the tutorial's MLP
    assert meta["parameters"] == 784 * 128 + 128 + 128 * 10 + 10  # the tutorial's MLP
    assert 0.3 < meta["metrics"]["test_accuracy"] <= 1.0
    assert set(meta["versions"]) >= {"edgeship", "tensorflow", "keras", "numpy", "python"}

    import keras

    model = keras.saving.load_model(out / "model.keras")
    assert model.count_params() == meta["parameters"]
    # The saved model reproduces the recorded test accuracy.
    from edgeship.train.datasets import load_fashion_mnist

    data = load_fashion_mnist(fashion_dir)
    probs = model.predict(data.x_test.astype(np.float32) / 255, verbose=0, batch_size=1000)
    accuracy = float(np.mean(probs.argmax(1) == data.y_test))
    assert accuracy == pytest.approx(meta["metrics"]["test_accuracy"], abs=1e-4)

    # The same seed gives the same model.
    again = tmp_path / "again"
    assert run("--limit", 600, "--epochs", 1, "--seed", 3, "--out", again).exit_code == 0
    meta2 = json.loads((again / "model.json").read_text())
    assert meta2["metrics"] == meta["metrics"]


@pytest.mark.slow
def test_train_cnn_on_an_rgb_image_folder(tmp_path):
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for label, colour in (
        ("red", (220, 30, 30)),
        ("blue", (30, 30, 220)),
        ("green", (30, 200, 30)),
    ):
        for i in range(12):
            noise = rng.integers(-25, 25, size=(12, 12, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "RGB").save(root / label / f"{i}.png")
    out = tmp_path / "run"
    result = run("--model", "cnn", "--dataset", root, "--epochs", 2, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_names"] == ["blue", "green", "red"]
    assert meta["input"]["shape"] == [12, 12, 3] and meta["input"]["color_mode"] == "rgb"
    assert meta["input"]["background"] == "unknown"
    assert meta["dataset"]["name"] == "shapes"
    assert meta["dataset"]["train_size"] + meta["dataset"]["test_size"] == 36
    assert (out / "model.keras").stat().st_size > 0
    # The CNN's recipe: the learning rate follows a half cosine over the epochs; the saved
    # optimizer holds the last epoch's rate (epoch 1 of 2: 1e-3 * (1 + cos(pi / 2)) / 2).
    assert meta["training"]["learning_rate_schedule"] == "cosine"
    import keras

    model = keras.saving.load_model(out / "model.keras")
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4, rel=1e-5)


def test_help_lists_the_options():
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--model",
        "--epochs",
        "--batch-size",
        "--seed",
        "--dataset",
        "--data-dir",
        "--limit",
        "--out",
    ):
        assert flag in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--model", "resnet"], "Unknown model"),
    ],
)
def test_bad_options(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert_clean_failure(run(*args, "--out", out), out, fragment)


def test_missing_and_empty_data_dir(tmp_path):
    out = tmp_path / "run"
    assert_clean_failure(run("--data-dir", tmp_path / "nope", "--out", out), out, "does not exist")
    (tmp_path / "empty").mkdir()
    assert_clean_failure(
        run("--data-dir", tmp_path / "empty", "--out", out), out, "lacks Fashion-MNIST"
    )


def test_corrupt_dataset_files(tmp_path, fashion_dir):
    data = tmp_path / "data"
    shutil.copytree(fashion_dir, data)
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    out = tmp_path / "run"

    labels.write_bytes(labels.read_bytes()[:-100])  # a cut-off download
    assert_clean_failure(run("--data-dir", data, "--out", out), out, "truncated")

    labels.write_bytes(gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])))  # one bit flipped
    assert_clean_failure(run("--data-dir", data, "--out", out), out, "Checksum mismatch")

    labels.write_bytes(gzip.compress(b"\x08\x03" + raw[2:]))  # wrong magic
    assert_clean_failure(run("--data-dir", data, "--out", out), out, "wrong magic number")

    labels.write_bytes(raw[:-10])  # not gzipped, cut off: the header's size does not match
    assert_clean_failure(run("--data-dir", data, "--out", out), out, "truncated or corrupt")


def test_image_folder_with_one_class(tmp_path):
    (tmp_path / "ds" / "only").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "ds" / "only" / "a.png")
    out = tmp_path / "run"
    assert_clean_failure(
        run("--dataset", tmp_path / "ds", "--out", out), out, "at least two class subfolders"
    )


def test_interrupted_training_leaves_nothing(tmp_path, fashion_dir):
    import keras

    from edgeship.train.training import TrainConfig, train

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(limit=64, epochs=1), out, callbacks=[Interrupt()])
    assert not out.exists()  # not even an empty folder


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "abc", "--out", "x"], "Invalid value for '--epochs'"),
        ([], "Missing option '--out'"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, fragment):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert lines[0].endswith("See 'edgeship train --help'.")
