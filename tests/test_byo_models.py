"""Models users bring that are not 10-class softmax Fashion-MNIST: a binary classifier with one
sigmoid unit (or one logit), a stock int8-input .tflite without metadata.

Each answer is compared with Keras's own `model.predict` on the same input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.classifier import EdgeClassifier
from edge_runtime.errors import LabelsError
from edgeship.cli import app
from tests.conftest import _convert

pytestmark = pytest.mark.slow  # converts real (tiny) models: a few seconds each

SHAPE = (12, 20, 3)  # H, W, C: not square
runner = CliRunner()
FAST = [
    "--runs",
    "3",
    "--warmup",
    "1",
    "--batch",
    "4",
    "--predict-runs",
    "1",
    "--no-memory",
    "--no-plots",
]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _pixels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)
    x[: n // 2, ..., 0] //= 4  # half the images have a dark red channel: both answers occur
    return x


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A binary Keras classifier (Rescaling inside, one sigmoid unit) saved as .keras, a logit
    twin (the same weights, no sigmoid) converted to float32, and photos in neg/ and pos/."""
    import keras

    root = tmp_path_factory.mktemp("binary")
    keras.utils.set_random_seed(4)
    x = _pixels(64, 1)
    y = (np.arange(64) >= 32).astype(np.float32)
    logit = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    sigmoid = keras.Sequential([logit, keras.layers.Activation("sigmoid")])
    sigmoid.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    sigmoid.fit(x.astype(np.float32), y, epochs=3, batch_size=16, verbose=0)
    sigmoid.save(root / "binary.keras")
    logit_path = root / "logit.tflite"
    logit_path.write_bytes(_convert(logit, root / "export", SHAPE, "float32", x[:8]))
    for name, images in (("neg", x[:4]), ("pos", x[-4:])):
        (root / "photos" / name).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / "photos" / name / f"{i}.png")
    return {"root": root, "keras": sigmoid, "logit_keras": logit, "logit": logit_path, "x": x}


@pytest.fixture(scope="module")
def binary_run(binary):
    """`edgeship convert` of the binary model (float32, int8), calibrated on its photos."""
    root = binary["root"]
    run = root / "run"
    result = cli(
        "convert",
        root / "binary.keras",
        "--quantize",
        "float32,int8",
        "--calibration-data",
        root / "photos",
        "--class-names",
        "neg,pos",
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    return run


def test_one_sigmoid_unit_is_two_classes_through_convert_bench_predict(binary, binary_run):
    root, x, run = binary["root"], binary["x"], binary_run
    p = binary["keras"].predict(x.astype(np.float32), verbose=0)[:, 0]
    want = np.stack([1 - p, p], axis=1)
    assert 0 < (p > 0.5).sum() < len(p)  # both classes are answered
    clf = EdgeClassifier.load(run / "model_float32.tflite")
    assert clf.num_classes == 2 and clf.class_names == ("neg", "pos")
    np.testing.assert_allclose(clf.predict_proba(x), want, atol=1e-5)
    answers = clf.predict(x[:2])
    assert [a.label for a in answers] == [("neg", "pos")[int(v > 0.5)] for v in p[:2]]
    with pytest.raises(
        LabelsError,
        match=r"1 class names for a model with 2 outputs.*one "
        r"sigmoid output: a binary model, class 0 then class 1",
    ):
        EdgeClassifier.load(run / "model_float32.tflite", labels=["pos"])
    int8 = EdgeClassifier.load(run / "model_int8.tflite").predict_proba(x)
    assert np.mean(int8.argmax(1) == want.argmax(1)) >= 0.9

    result = cli("bench", run, "--test-data", root / "photos", *FAST, "--out", run / "bench")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    assert rows["float32"]["agreement"] == 1.0
    assert rows["float32"]["accuracy"] == rows["keras"]["accuracy"]


def test_one_logit_unit_gets_a_sigmoid_not_a_softmax(binary):
    """A softmax of one value is 1.0 whatever the image: the runtime must apply a sigmoid."""
    x = binary["x"]
    z = binary["logit_keras"].predict(x.astype(np.float32), verbose=0)[:, 0]
    p = 1 / (1 + np.exp(-z))
    clf = EdgeClassifier.load(binary["logit"])
    assert clf.output_head != "LOGISTIC" and clf.num_classes == 2
    np.testing.assert_allclose(
        clf.predict_proba(x.astype(np.float32)), np.stack([1 - p, p], axis=1), atol=1e-5
    )


def test_stock_int8_input_model_without_metadata_takes_raw_pixels(tmp_path):
    """A stock model with an int8 input tensor (trained on [0, 1], quantized scale 1/255,
    zero point -128) and no edgeship metadata: a raw pixel p goes in as p - 128, as a uint8
    model's goes in as p, so its answers are Keras's on p / 255."""
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                5,
                activation="softmax",
                kernel_initializer=keras.initializers.RandomNormal(stddev=3.0),
            ),
        ]
    )
    calib = np.random.default_rng(0).uniform(0, 1, size=(32, *SHAPE)).astype(np.float32)
    calib[0], calib[1] = 0.0, 1.0  # the full [0, 1] range
    path = tmp_path / "stock_int8.tflite"
    path.write_bytes(_convert(model, tmp_path / "export", SHAPE, "int8", calib))
    x = _pixels(16, 3)
    want = model.predict(x.astype(np.float32) / 255.0, verbose=0)
    clf = EdgeClassifier.load(path)
    assert clf.input_spec.dtype == np.int8 and clf.metadata is None
    got = clf.predict_proba(x)
    assert np.abs(got - want).max() < 0.03
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9


def test_tutorial_grids_sample_a_class_ordered_test_set_across_classes():
    """Photos read folder by folder come grouped by class: the grids take one of each class in
    turn, not the first class's images only; a mixed set (Fashion-MNIST's) shows its first."""
    from edgeship.bench.testdata import spread_indices as grid_indices

    by_folder = np.repeat([0, 1, 2], [10, 3, 6])
    shown = grid_indices(by_folder, 15)
    assert list(by_folder[shown][:9]) == [0, 1, 2] * 3
    assert len(set(shown.tolist())) == 15 and list(shown[:3]) == [0, 10, 13]
    mixed = np.array([9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 0])
    assert list(grid_indices(mixed, 15)) == list(range(15))
    assert list(grid_indices(np.repeat([0, 1], 2), 15)) == [0, 2, 1, 3]


def test_bench_plots_a_1001_class_stock_model(tmp_path):
    """An ImageNet-sized head: the confusion matrix used to draw 1001 x 1001 texts and every
    probability plot 1001 labelled bars (over ten minutes, on one test image per class).
    Now the plots come with the report, and the bars are each image's likeliest classes."""
    import keras

    keras.utils.set_random_seed(6)
    shape = (8, 8, 3)
    model = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(1001, activation="softmax"),
        ]
    )
    run = tmp_path / "run"
    run.mkdir()
    calib = np.random.default_rng(0).uniform(0, 1, size=(8, *shape)).astype(np.float32)
    (run / "stock.tflite").write_bytes(_convert(model, tmp_path / "export", shape, "uint8", calib))
    rng = np.random.default_rng(1)
    npz = tmp_path / "test.npz"
    np.savez(npz, x=rng.integers(0, 256, (20, *shape), dtype=np.uint8), y=np.arange(20) * 50)
    result = cli("bench", run, "--test-data", npz, *[a for a in FAST if a != "--no-plots"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "bench" / "report.json").read_text())
    assert {"confusion_stock.png", "probabilities_stock.png"} <= set(report["plots"])
    model = report["models"][0]
    assert len(model["per_class_accuracy"]) == 1001
    # the confusion matrix as its non-zero cells, not a million numbers (13 MB per model)
    assert model["confusion_matrix"] is None and model["confusion_sparse"]["classes"] == 1001
    assert sum(c for _, _, c in model["confusion_sparse"]["cells"]) == 20
    assert (run / "bench" / "report.json").stat().st_size < 200_000


def test_a_model_normalized_outside_converts_with_input_scale(binary, tmp_path):
    """The tutorial's own pattern: a model without a Rescaling layer, trained on `x / 255`.
    `--input-scale` tells convert: calibration, the check, bench's Keras row and the runtime
    all feed p / 255; each answer is Keras's on p / 255."""
    import keras

    keras.utils.set_random_seed(7)
    x = binary["x"]
    y = (np.arange(64) >= 32).astype(np.int64)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32) / 255, y, epochs=5, batch_size=16, verbose=0)
    model.save(tmp_path / "tutorial.keras")
    run = tmp_path / "run"
    photos = binary["root"] / "photos"
    result = cli(
        "convert",
        tmp_path / "tutorial.keras",
        "--quantize",
        "float32,int8",
        "--calibration-data",
        photos,
        "--class-names",
        "neg,pos",
        "--input-scale",
        1 / 255,
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    want = model.predict(x.astype(np.float32) / 255, verbose=0)
    for mode in ("float32", "int8"):
        clf = EdgeClassifier.load(run / f"model_{mode}.tflite")
        assert clf.input_scale == pytest.approx(1 / 255) and clf.input_offset == 0
        np.testing.assert_allclose(
            clf.predict_proba(x), want, atol=1e-5 if mode == "float32" else 0.05
        )
    result = cli("bench", run, "--test-data", photos, *FAST, "--out", run / "bench")
    assert result.exit_code == 0, result.output
    rows = {m["name"]: m for m in json.loads((run / "bench" / "report.json").read_text())["models"]}
    assert rows["keras"]["accuracy"] == rows["float32"]["accuracy"]
    assert rows["float32"]["agreement"] == 1.0

    result = cli(
        "convert",
        tmp_path / "tutorial.keras",
        "--quantize",
        "float32",
        "--input-scale",
        0,
        "--out",
        tmp_path / "bad",
    )
    assert result.exit_code == 2 and "--input-scale must not be 0" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_label_writes_pixel_scaling_alone_and_keeps_the_other_half(tmp_path):
    """A stock float32 model trained on [-1, 1]: `edgeship label --input-scale S
    --input-offset O` (no labels file) makes its answers Keras's; a later `--input-scale`
    alone keeps the offset."""
    import keras

    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(
                4,
                activation="softmax",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.5),
            ),
        ]
    )
    path = tmp_path / "mobilenet_style.tflite"
    path.write_bytes(_convert(model, tmp_path / "export", SHAPE, "float32", None))
    x = _pixels(8, 4)
    want = model.predict(x.astype(np.float32) / 127.5 - 1, verbose=0)
    result = cli("label", path, "--input-scale", 1 / 127.5, "--input-offset", -1)
    assert result.exit_code == 0, result.output
    assert "pixel scaling p * 0.00784314 - 1 written" in result.stdout
    np.testing.assert_allclose(EdgeClassifier.load(path).predict_proba(x), want, atol=1e-5)
    result = cli("label", path, "--input-scale", 2 / 255)
    assert result.exit_code == 0, result.output
    clf = EdgeClassifier.load(path)
    assert clf.input_scale == pytest.approx(2 / 255) and clf.input_offset == -1


def test_deploy_bundle_of_a_run_of_stock_tflite_files(tmp_path):
    """A folder of anyone's .tflite files (no model_<mode>.tflite) bundles them all by
    default, or the ones `--models` names; a name the run lacks is one error line."""
    import tarfile

    import keras

    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    run = tmp_path / "stock_run"
    run.mkdir()
    data = _convert(model, tmp_path / "export", SHAPE, "float32", None)
    (run / "mobilenet.tflite").write_bytes(data)
    (run / "other.tflite").write_bytes(data)
    for args, want in (
        ([], ["models/mobilenet.tflite", "models/other.tflite"]),
        (["--models", "mobilenet"], ["models/mobilenet.tflite"]),
    ):
        out = tmp_path / f"b{len(args)}.tar.gz"
        result = cli("deploy", "bundle", run, "--out", out, "--target", "trixie-arm64", *args)
        assert result.exit_code == 0, result.output
        with tarfile.open(out) as tar:
            manifest = json.load(tar.extractfile(f"{out.name[:-7]}/manifest.json"))
        assert [m["file"] for m in manifest["models"]] == want
    result = cli("deploy", "bundle", run, "--out", tmp_path / "c.tar.gz", "--models", "int8")
    assert result.exit_code == 2
    assert "available=mobilenet.tflite, other.tflite" in result.stderr
    assert not (tmp_path / "c.tar.gz").exists()


def test_serve_applies_the_models_crop_rule_like_predict(tmp_path):
    """A model converted with `--resize crop`: the service answered for the stretched photo
    (it prepared photos itself, without the rule); now it answers as `predict` does."""
    import keras

    from edge_runtime.files import atomic_write_bytes
    from edge_runtime.metadata.block import embed_metadata
    from tests.support.serving import start_server

    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(
                4,
                activation="softmax",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.3),
            ),
        ]
    )
    data = _convert(model, tmp_path / "export", SHAPE, "float32", None)
    meta = {
        "schema_version": 1,
        "model": "custom",
        "class_names": ["a", "b", "c", "d"],
        "input": {"shape": list(SHAPE), "scale": 1.0, "offset": 0.0, "resize": "crop"},
    }
    path = atomic_write_bytes(tmp_path / "crop.tflite", embed_metadata(data, meta))
    ramp = np.linspace(0, 255, 60)[None, :, None]  # a square photo, left dark, right bright
    photo = (np.zeros((60, 60, 3)) + ramp).astype(np.uint8)
    photo[:, :, 1] = np.linspace(255, 0, 60)[:, None].astype(np.uint8)
    png = tmp_path / "square.png"
    Image.fromarray(photo).save(png)
    clf = EdgeClassifier.load(path)
    want = clf.predict(png)[0].probabilities
    stretched = clf.predict(
        np.asarray(Image.open(png).resize((SHAPE[1], SHAPE[0]), Image.Resampling.BILINEAR))
    )
    assert np.abs(stretched[0].probabilities - want).max() > 1e-3  # the rules differ here
    served = start_server([path], tmp_path)
    try:
        status, body = served.predict(png.read_bytes(), "?top_k=4")
    finally:
        assert served.stop() == 0
    assert status == 200, body
    got = {row["index"]: row["confidence"] for row in body["top_k"]}
    np.testing.assert_allclose([got[i] for i in range(4)], want, atol=1e-5)


def test_a_48_megapixel_phone_jpeg_classifies(tmp_path):
    """8064 x 6048 (a 48 MP phone photo) was refused as a decompression bomb (limit 40 MP);
    a JPEG decodes at a fraction of its size for free, and answers as its small copy does."""
    from edge_runtime.image.preprocess import load_and_preprocess

    big = Image.new("RGB", (8064, 6048), (30, 60, 200))
    big.paste((220, 40, 20), (0, 0, 4032, 6048))  # left half red, right half blue
    path = tmp_path / "phone.jpg"
    big.save(path, quality=90)
    small = tmp_path / "small.png"
    big.resize((504, 378), Image.Resampling.BILINEAR).save(small)
    del big
    got = load_and_preprocess(path, SHAPE, invert="no")
    want = load_and_preprocess(small, SHAPE, invert="no")
    assert got.shape == SHAPE and np.abs(got.astype(int) - want).mean() < 3


def test_an_iphone_heic_photo_says_what_it_is(tmp_path):
    """Pillow reads no HEIC: the error names the format and the fix, not 'not an image'."""
    from edge_runtime.errors import ImageError
    from edge_runtime.image.preprocess import load_image

    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # its ftyp box
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(heic)
    for source in (path, heic):
        with pytest.raises(ImageError, match="HEIC/HEIF .* Export it as JPEG"):
            load_image(source)
    (tmp_path / "x.jpg").write_bytes(b"hello")
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        load_image(tmp_path / "x.jpg")


def test_the_keras_tutorials_own_model_converts_and_benches(tmp_path):
    """The Fashion-MNIST tutorial's model as its users have it: `Flatten(input_shape=(H, W))`
    (no channel axis), logits (no softmax), trained on `x / 255` outside the model. It was
    refused ("input must be (batch, height, width, channels)"); now it converts with
    --input-scale, and every variant answers as Keras does."""
    import keras

    keras.utils.set_random_seed(10)
    hw = (10, 12)
    rng = np.random.default_rng(10)
    y = np.arange(60) % 3
    x = np.clip(y[:, None, None] * 90 + rng.normal(20, 25, (60, *hw)), 0, 255).astype(np.uint8)
    model = keras.Sequential(
        [
            keras.Input(hw),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x / 255.0, y, epochs=5, batch_size=16, verbose=0)
    model.save(tmp_path / "tutorial.keras")
    photos = tmp_path / "photos"
    for i, (image, label) in enumerate(zip(x[:30], y[:30], strict=True)):
        (photos / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(photos / f"c{label}" / f"{i}.png")
    run = tmp_path / "run"
    result = cli(
        "convert",
        tmp_path / "tutorial.keras",
        "--quantize",
        "float32,int8",
        "--calibration-data",
        photos,
        "--class-names",
        "c0,c1,c2",
        "--input-scale",
        1 / 255,
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    logits = model.predict(x / 255.0, verbose=0)
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    clf = EdgeClassifier.load(run / "model_float32.tflite")
    assert clf.input_shape == (*hw, 1)
    np.testing.assert_allclose(clf.predict_proba(x), want, atol=1e-5)
    result = cli("bench", run, "--test-data", photos, *FAST, "--out", run / "bench")
    assert result.exit_code == 0, result.output
    rows = {m["name"]: m for m in json.loads((run / "bench" / "report.json").read_text())["models"]}
    assert rows["keras"]["accuracy"] == rows["float32"]["accuracy"] > 0.5
    assert rows["float32"]["agreement"] == 1.0 and rows["int8"]["agreement"] >= 0.9


def test_a_uint8_npy_calibration_is_raw_pixels_scaled_by_input_scale(binary, tmp_path):
    """`--calibration-data x.npy` of uint8 photos with `--input-scale 1/255`: it calibrated on
    0-255 values a [0, 1] model never sees (the int8 input tensor's range 255 times too
    wide). Now uint8 arrays are pixels, scaled as photos are."""
    import keras

    keras.utils.set_random_seed(11)
    x = binary["x"]
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "calib.npy", x)
    run = tmp_path / "run"
    result = cli(
        "convert",
        tmp_path / "m.keras",
        "--quantize",
        "int8",
        "--int8-io",
        "--calibration-data",
        tmp_path / "calib.npy",
        "--input-scale",
        1 / 255,
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    clf = EdgeClassifier.load(run / "model_int8.tflite")
    assert clf.input_spec.scale == pytest.approx(1 / 255, rel=0.02)
    want = model.predict(x / 255.0, verbose=0)
    assert np.abs(clf.predict_proba(x) - want).max() < 0.05


def test_bench_limit_on_a_photo_folder_keeps_every_class(binary, binary_run, tmp_path):
    """`--limit 4` on photos read folder by folder kept the first folder's 4 (all `neg`):
    now 2 of each class."""
    result = cli(
        "bench",
        binary_run,
        "--test-data",
        binary["root"] / "photos",
        "--limit",
        4,
        *FAST,
        "--out",
        tmp_path / "bench",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    for model in report["models"]:
        assert np.asarray(model["confusion_matrix"]).sum(axis=1).tolist() == [2, 2]


def test_bench_says_why_the_keras_row_is_missing(binary_run, tmp_path):
    """The Keras file convert recorded is gone (the run was copied to another machine): the
    Keras row went missing without a word on the terminal."""
    from edge_runtime.files import atomic_write_bytes
    from edge_runtime.metadata.block import embed_metadata, read_metadata

    run = tmp_path / "copied_run"
    run.mkdir()
    for mode in ("float32", "int8"):
        src = binary_run / f"model_{mode}.tflite"
        meta = read_metadata(src)
        meta["source_model"]["path"] = str(tmp_path / "elsewhere" / "binary.keras")
        atomic_write_bytes(run / src.name, embed_metadata(src.read_bytes(), meta))
    result = cli("bench", run, "--test-data", binary_run.parent / "photos", *FAST)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "note: the Keras model model_float32.tflite was converted from is gone" in text
    assert "--keras PATH" in text and "Keras latency" not in text


def test_bench_keras_of_another_input_shape_is_refused(binary, binary_run, tmp_path):
    """`--keras` naming another model: a convolutional one even ran on the run's images and
    gave agreement figures against the wrong model."""
    import keras

    other = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    other.save(tmp_path / "other.keras")
    result = cli(
        "bench",
        binary_run,
        "--test-data",
        binary["root"] / "photos",
        "--keras",
        tmp_path / "other.keras",
        *FAST,
        "--out",
        tmp_path / "bench",
    )
    assert result.exit_code == 2
    assert "The Keras model takes images of (32, 32, 3), the run's models (12, 20, 3)" in " ".join(
        result.stderr.split()
    )


def test_a_1001_line_labels_file_for_a_1000_class_model_says_which_line(tmp_path):
    """TF's ImageNet labels.txt starts with `background` (1001 lines); Keras's MobileNets have
    1000 outputs: the error says to drop that line."""
    from edge_runtime.errors import LabelsError
    from edge_runtime.metadata.labels import resolve_labels

    labels = tmp_path / "labels.txt"
    labels.write_text("background\n" + "\n".join(f"class {i}" for i in range(1000)) + "\n")
    with pytest.raises(
        LabelsError,
        match="line 1, 'background', is class 0 of 1001-class "
        "models: this model has none; remove that line",
    ):
        resolve_labels(labels, 1000)
    assert len(resolve_labels(labels, 1001)) == 1001


def test_python_m_edgeship_cli_runs_the_command():
    """`python -m edgeship.cli convert ...` did nothing and exited 0 (no __main__ guard)."""
    import subprocess
    import sys

    from tests.support.procs import REPO

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeship.cli",
            "label",
            "/nonexistent.tflite",
            "--labels",
            "/nonexistent.txt",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr


def test_bench_refuses_a_leftover_of_another_keras_files_conversion(binary, binary_run, tmp_path):
    """Two Keras files converted into one folder: the first one's int8 was benched against the
    second one's Keras model (a 'quantization disaster' that was another model)."""
    import shutil

    from edge_runtime.files import atomic_write_bytes
    from edge_runtime.metadata.block import embed_metadata, read_metadata

    run = tmp_path / "mixed"
    run.mkdir()
    shutil.copyfile(binary_run / "model_float32.tflite", run / "model_float32.tflite")
    src = binary_run / "model_int8.tflite"
    meta = read_metadata(src)
    meta["source_model"] = {"path": str(tmp_path / "older.keras"), "sha256": "0" * 64}
    atomic_write_bytes(run / src.name, embed_metadata(src.read_bytes(), meta))
    result = cli("bench", run, "--test-data", binary["root"] / "photos", *FAST)
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "model_int8.tflite: stale: converted from another Keras file" in text
    report = json.loads((run / "bench" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["keras", "float32"]


def test_a_model_with_augmentation_layers_inside_converts_without_them(tmp_path):
    """TensorFlow's image classification tutorial keeps RandomFlip/RandomRotation/RandomZoom in
    the model. Exported as Keras 3 traces `model(x)` (their training default: True), every
    mode failed ('StatelessRandomGetKeyCounter' cannot be converted); inference has none."""
    import keras

    keras.utils.set_random_seed(13)
    layers = keras.layers
    augmentation = keras.Sequential(
        [layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.1)]
    )
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            augmentation,
            layers.Rescaling(1 / 255.0),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    model.save(tmp_path / "flowers.keras")
    photos = tmp_path / "photos"
    x = _pixels(6, 5)
    for i, image in enumerate(x):
        (photos / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(photos / f"c{i % 3}" / f"{i}.png")
    run = tmp_path / "run"
    result = cli(
        "convert",
        tmp_path / "flowers.keras",
        "--quantize",
        "float32,int8",
        "--calibration-data",
        photos,
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    logits = model.predict(x.astype(np.float32), verbose=0)
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = EdgeClassifier.load(run / "model_float32.tflite").predict_proba(x)
    np.testing.assert_allclose(got, want, atol=1e-5)  # and no random flip at inference


def test_predict_on_the_keras_file_says_convert_it_first(binary, tmp_path):
    """`edgeship predict model.keras photo.jpg`, the first thing a Keras user tries."""
    from edge_runtime.errors import ModelFileError
    from edge_runtime.metadata.block import read_model_bytes

    with pytest.raises(ModelFileError, match=r"zip archive: a Keras \.keras model\? convert it"):
        read_model_bytes(binary["root"] / "binary.keras")
    binary["keras"].save(tmp_path / "binary.h5")
    with pytest.raises(ModelFileError, match=r"HDF5 file: a Keras \.h5 model\? convert it"):
        read_model_bytes(tmp_path / "binary.h5")


def test_watch_says_why_an_iphone_heic_photo_is_not_classified(binary_run, tmp_path):
    """A phone syncing HEIC photos into the watched folder: they were skipped without a word."""
    import time

    from tests.support.serving import start_server

    watch, results = tmp_path / "incoming", tmp_path / "results.jsonl"
    watch.mkdir()
    served = start_server(
        [binary_run / "model_float32.tflite", "--watch", watch, "--results", results], tmp_path
    )
    try:
        (watch / "IMG_0002.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(80))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not results.read_text().strip():
            time.sleep(0.05)
    finally:
        assert served.stop() == 0
    (line,) = [json.loads(x) for x in results.read_text().splitlines()]
    assert line["image"].endswith("IMG_0002.HEIC") and "HEIC/HEIF" in line["error"]


def test_a_stock_run_with_keras_feeds_keras_what_the_tflite_gets(binary, tmp_path):
    """A stock float32 .tflite (no metadata: raw 0-255 pixels in; the model has its own
    Rescaling) benched with `--keras` of its source: the Keras row was fed p / 255 (a default
    for edgeship's runs), so it disagreed with its own conversion."""
    run = tmp_path / "stock"
    run.mkdir()
    keras_model = binary["keras"]
    (run / "binary.tflite").write_bytes(
        _convert(keras_model, tmp_path / "export", SHAPE, "float32", None)
    )
    keras_model.save(tmp_path / "binary.keras")
    x = binary["x"]
    npz = tmp_path / "test.npz"
    np.savez(npz, x=x, y=(np.arange(len(x)) >= 32).astype(np.int64))
    result = cli("bench", run, "--test-data", npz, "--keras", tmp_path / "binary.keras", *FAST)
    assert result.exit_code == 0, result.output
    rows = {m["name"]: m for m in json.loads((run / "bench" / "report.json").read_text())["models"]}
    assert rows["binary"]["agreement"] == 1.0
    assert rows["binary"]["prob_diff_max"] < 1e-4  # was 0.49: Keras saw other pixels
    assert rows["keras"]["accuracy"] == rows["binary"]["accuracy"]


def test_a_mixed_precision_model_converts_in_float32(tmp_path):
    """Trained with `mixed_float16` (Keras's GPU recipe): the float16 graph failed every mode
    in the TFLite converter. convert rebuilds it in float32 with the same weights."""
    import keras

    keras.utils.set_random_seed(14)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layers = keras.layers
        inputs = keras.Input(SHAPE)
        x = layers.Conv2D(4, 3, activation="relu")(layers.Rescaling(1 / 255.0)(inputs))
        x = keras.Sequential([layers.GlobalAveragePooling2D(), layers.Dense(8)])(x)
        outputs = layers.Dense(3, activation="softmax", dtype="float32")(x)
        model = keras.Model(inputs, outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "mixed.keras")
    x = _pixels(6, 6)
    np.save(tmp_path / "calib.npy", x)
    run = tmp_path / "run"
    result = cli(
        "convert",
        tmp_path / "mixed.keras",
        "--quantize",
        "float32,int8",
        "--calibration-data",
        tmp_path / "calib.npy",
        "--out",
        run,
    )
    assert result.exit_code == 0, result.output
    want = model.predict(x.astype(np.float32), verbose=0)  # in float16: within its precision
    got = EdgeClassifier.load(run / "model_float32.tflite").predict_proba(x)
    assert np.abs(got - want).max() < 2e-3


def test_bench_of_a_byo_run_without_test_data_says_to_give_it(binary_run, tmp_path):
    """Issue 12's first symptom: `edgeship bench RUN` fell back to Fashion-MNIST, then failed
    every model ('input does not match the test images'). Now one line: pass --test-data."""
    result = cli("bench", binary_run, *FAST, "--out", tmp_path / "bench")
    assert result.exit_code == 2
    line = " ".join(result.stderr.split())
    assert line.startswith("error: These models were converted from your own Keras model")
    assert "--test-data DIR" in line and "does not match" not in line
    assert not (tmp_path / "bench").exists()
