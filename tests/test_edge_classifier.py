"""EdgeClassifier on real converted models: every input kind, quantized I/O, threads, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from edge_runtime.backends import load_backend, normalize_backend_name
from edge_runtime.classifier import EdgeClassifier, Prediction
from edge_runtime.errors import BackendError, ImageError, InputShapeError, ModelFileError
from edge_runtime.image.preprocess import border_mean, preprocess_image
from edge_runtime.tensors import TensorSpec


def _raw_interpreter_proba(path, x_model_space):
    """Reference: the bare interpreter, one image at a time, quantizing by hand."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for img in x_model_space:
        x = img[None].astype(np.float32)
        scale, zp = inp["quantization"]
        if scale:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.rint(x / scale + zp), info.min, info.max)
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        y = interp.get_tensor(out["index"]).astype(np.float32)
        oscale, ozp = out["quantization"]
        if oscale:
            y = (y - ozp) * oscale
        rows.append(y[0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(6, 28, 28, 1), dtype=np.uint8)


@pytest.mark.parametrize("name", ["mlp_float32", "mlp_int8"])
def test_matches_bare_interpreter(edge_models, images, name):
    clf = EdgeClassifier.load(edge_models[name])
    got = clf.predict_proba(images)
    want = _raw_interpreter_proba(edge_models[name], images.astype(np.float32) / 255.0)
    assert got.shape == (6, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_int8_io_tensors_and_lut(edge_models):
    clf = EdgeClassifier.load(edge_models["mlp_int8"])
    assert clf.input_spec.dtype == np.int8 and clf.input_spec.quantized
    assert clf.output_spec.dtype == np.int8 and clf.output_spec.quantized
    # raw pixel p -> p/255 in model space -> quantized with the tensor's own scale/zero point
    expected = np.clip(
        np.rint(np.arange(256) / 255.0 / clf.input_spec.scale + clf.input_spec.zero_point),
        -128,
        127,
    )
    np.testing.assert_array_equal(clf._lut, expected.astype(np.int8))
    probs = clf.predict_proba(np.zeros((28, 28), np.uint8))
    assert np.all(probs >= 0) and abs(float(probs.sum()) - 1.0) < 0.05


def test_uint8_io_model_without_metadata(edge_models):
    clf = EdgeClassifier.load(edge_models["cnn_uint8"])
    assert clf.metadata is None
    assert clf.input_spec.dtype == np.uint8
    assert clf.class_names == tuple(str(i) for i in range(10))
    x = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    preds = clf.predict(x)
    assert [p.label for p in preds] == [str(p.index) for p in preds]
    # no metadata: raw uint8 pixels go to the uint8 tensor unchanged
    np.testing.assert_array_equal(clf._lut, np.arange(256, dtype=np.uint8))


def test_every_input_kind_agrees(edge_models, images, tmp_path):
    clf = EdgeClassifier.load(edge_models["mlp_float32"], invert="no")
    img2d = images[0, :, :, 0]
    ref = clf.predict_proba(images[:1])[0]
    path = tmp_path / "x.png"
    Image.fromarray(img2d, "L").save(path)
    variants = {
        "2d uint8": img2d,
        "3d uint8": images[0],
        "2d float": img2d.astype(np.float32) / 255.0,
        "3d float": images[0].astype(np.float64) / 255.0,
        "pil": Image.fromarray(img2d, "L"),
        "path": path,
        "str path": str(path),
        "list": [path],
        "int64": img2d.astype(np.int64),
    }
    for name, x in variants.items():
        preds = clf.predict(x)
        assert len(preds) == 1, name
        np.testing.assert_allclose(preds[0].probabilities, ref, atol=1e-5, err_msg=name)
    batch = clf.predict(images)
    assert len(batch) == 6 and all(isinstance(p, Prediction) for p in batch)
    batch3 = clf.predict(images[..., 0])
    assert [p.index for p in batch3] == [p.index for p in batch]
    mixed = clf.predict([images[0], Image.fromarray(img2d, "L"), path])
    assert len(mixed) == 3


def test_prediction_fields(edge_models, images):
    clf = EdgeClassifier.load(edge_models["mlp_int8"])
    p = clf.predict(images[0])[0]
    assert p.label == f"class_{p.index}"
    assert p.confidence == pytest.approx(float(p.probabilities.max()))
    top = p.top_k(3)
    assert [t["index"] for t in top][0] == p.index
    assert [t["confidence"] for t in top] == sorted([t["confidence"] for t in top], reverse=True)
    assert len(p.top_k(50)) == 10


@pytest.mark.parametrize("name", ["mlp_float32", "mlp_int8", "cnn_float32", "cnn_uint8"])
def test_one_image_fast_path_equals_general_path(edge_models, name):
    """predict/predict_proba of ONE uint8 array (fast path) == the same image as a list."""
    clf = EdgeClassifier.load(edge_models[name])
    rng = np.random.default_rng(11)
    imgs = rng.integers(0, 256, size=(3, *clf.input_shape), dtype=np.uint8)
    variants = [imgs[0], np.asfortranarray(imgs[1]), imgs[2, ::-1][::-1]]  # odd strides too
    if clf.input_shape[-1] == 1:
        variants.append(imgs[0][..., 0])
    for img in variants:
        (fast,) = clf.predict(img)
        (general,) = clf.predict([np.ascontiguousarray(img)])
        assert (fast.index, fast.label, fast.confidence) == (
            general.index,
            general.label,
            general.confidence,
        )
        np.testing.assert_array_equal(fast.probabilities, general.probabilities)
        assert fast.probabilities.dtype == np.float32 and fast.probabilities.shape == (10,)
        assert fast.top_k(2) == general.top_k(2) and "probabilities=array" in repr(fast)
        np.testing.assert_array_equal(clf.predict_proba(img), clf.predict_proba(img[None]))


def test_one_image_fast_path_with_an_offset(edge_models, tmp_path):
    """A float-input model whose metadata scales pixels to [-1, 1] (scale and offset): the
    single-image path's table gives the general path's values, offset included."""
    from edge_runtime.metadata.block import embed_metadata, read_embedded_metadata

    data = edge_models["mlp_float32"].read_bytes()
    meta = read_embedded_metadata(data)
    meta["input"] = {**meta["input"], "scale": 2 / 255, "offset": -1.0}
    path = tmp_path / "signed.tflite"
    path.write_bytes(embed_metadata(data, meta))
    clf = EdgeClassifier.load(path)
    assert clf.input_offset == -1.0
    img = np.random.default_rng(5).integers(0, 256, size=clf.input_shape, dtype=np.uint8)
    (fast,) = clf.predict(img)
    (general,) = clf.predict([img])
    np.testing.assert_array_equal(fast.probabilities, general.probabilities)
    plain = EdgeClassifier.load(edge_models["mlp_float32"]).predict(img)[0]
    assert not np.array_equal(fast.probabilities, plain.probabilities)  # the offset counts


def test_batched_equals_single_and_chunking(edge_models):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(37, 28, 28, 1), dtype=np.uint8)
    clf = EdgeClassifier.load(edge_models["mlp_int8"], batch_size=8)  # 5 chunks, last padded
    batched = clf.predict_proba(x)
    single = np.stack([clf.predict_proba(img)[0] for img in x])
    np.testing.assert_array_equal(batched, single)
    np.testing.assert_array_equal(clf.predict_proba(x), batched)  # after resizing back


def test_threads_match_sequential(edge_models):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(64, 28, 28, 1), dtype=np.uint8)
    clf = EdgeClassifier.load(edge_models["mlp_int8"], batch_size=16)
    expected = clf.predict_proba(x)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(tid: int) -> None:
        try:
            out = []
            for i in range(30):
                if (i + tid) % 3 == 0:
                    out.append(("batch", clf.predict_proba(x)))
                else:
                    j = (i * 7 + tid) % 64
                    out.append((j, clf.predict(x[j])[0].probabilities))
            results[tid] = out
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for out in results.values():
        for key, value in out:
            want = expected if key == "batch" else expected[key]
            np.testing.assert_array_equal(value, want)


def test_conv_model_rgb_image_kinds(edge_models, tmp_path):
    clf = EdgeClassifier.load(edge_models["cnn_float32"])
    assert clf.input_shape == (32, 32, 3)
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([5, 5, 250])
    # Each kind's pixels, worked out by hand: the prediction is the plain RGB image's.
    cases = [
        # half-transparent over white: c * 128/255 + 255 * 127/255
        (Image.new("RGBA", (64, 48), (10, 200, 30, 128)), (132, 227, 142)),
        (pal, (5, 5, 250)),
        # 16-bit gray scaled to 8 bits: 40000 / 65535 * 255 = 155.6
        (Image.fromarray(np.full((40, 40), 40000, np.uint16)), (156, 156, 156)),
        (Image.new("L", (7, 90), 128), (128, 128, 128)),
    ]
    for img, rgb in cases:
        (want,) = clf.predict(np.full((32, 32, 3), rgb, np.uint8))
        (p,) = clf.predict(img)
        np.testing.assert_array_equal(p.probabilities, want.probabilities, err_msg=img.mode)


def test_preprocess_modes_and_invert():
    dark_bg = {"background": "dark"}
    light = Image.new("L", (56, 56), 250)
    light.paste(20, (20, 20, 36, 36))
    auto = preprocess_image(light, (28, 28, 1), invert="auto", **dark_bg)
    assert auto.shape == (28, 28, 1) and auto.dtype == np.uint8
    assert border_mean(auto) < 10 and auto[14, 14, 0] > 200  # inverted: dark border
    assert border_mean(preprocess_image(light, (28, 28, 1), invert="no", **dark_bg)) > 240
    assert border_mean(preprocess_image(light, (28, 28, 1), invert="auto")) > 240
    dark = Image.new("L", (28, 28), 0)
    assert border_mean(preprocess_image(dark, (28, 28, 1), invert="auto", **dark_bg)) == 0
    assert border_mean(preprocess_image(dark, (28, 28, 1), invert="yes")) == 255
    i16 = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    assert preprocess_image(i16, (28, 28, 1), invert="no").min() == 255
    with pytest.raises(ValueError, match="invert"):
        preprocess_image(dark, (28, 28, 1), invert="maybe")


def test_exif_orientation_applied():
    img = Image.new("L", (40, 20), 0)  # wide
    img.paste(255, (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.info["exif"] = exif.tobytes()
    img.getexif()[0x0112] = 6
    arr = preprocess_image(img, (40, 20, 1), invert="no")  # H=40, W=20 after rotation
    assert arr[0:10, :, 0].mean() > 200  # the white band is now on top


def test_wrong_shapes_and_dtypes(edge_models):
    clf = EdgeClassifier.load(edge_models["mlp_float32"])
    for bad in (
        np.zeros((27, 28), np.uint8),
        np.zeros((28, 28, 3), np.uint8),
        np.zeros((2, 2, 28, 28, 1), np.uint8),
        np.zeros((28, 28), np.int16) - 1,
        np.zeros((28, 28), bool),
    ):
        with pytest.raises(InputShapeError, match="Received: .*shape="):
            clf.predict(bad)
    with pytest.raises(InputShapeError):
        clf.predict(42)
    with pytest.raises(InputShapeError, match="mix"):
        clf.predict([np.zeros((28, 28), np.uint8), np.zeros((28, 28), np.float32)])


def test_bad_images(edge_models, tmp_path):
    clf = EdgeClassifier.load(edge_models["mlp_float32"])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="not an image"):
        clf.predict(text)
    with pytest.raises(ImageError, match="empty"):
        clf.predict(empty)
    with pytest.raises(ImageError, match="not found"):
        clf.predict(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="zero size"):
        clf.predict(Image.new("L", (0, 0)))
    with pytest.raises(ImageError, match="too large"):
        clf.predict(Image.new("L", (100, 100)).resize((1, 1)).resize((9000, 5000)))


def test_bad_model_files(edge_models, tmp_path):
    data = edge_models["mlp_float32"].read_bytes()
    cases = {
        "empty.tflite": b"",
        "trunc.tflite": data[: len(data) // 2],
        "zip.tflite": b"PK\x03\x04" + b"\x00" * 64,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelFileError, match="Received: "):
            EdgeClassifier.load(tmp_path / name)
    with pytest.raises(ModelFileError, match="not found"):
        EdgeClassifier.load(tmp_path / "missing.tflite")


def test_backends():
    assert normalize_backend_name("litert") == "ai_edge_litert"
    backend = load_backend()
    assert backend.name == "ai_edge_litert" and backend.version[0].isdigit()
    with pytest.raises(BackendError, match="Unknown backend"):
        load_backend("onnx")


def test_tensor_spec_validation():
    spec = TensorSpec.from_details(
        {
            "name": "x",
            "index": 0,
            "shape": np.array([1, 4]),
            "shape_signature": np.array([-1, 4]),
            "dtype": np.int8,
            "quantization": (0.5, -3),
        }
    )
    assert spec.quantized and spec.batch_resizable and spec.dtype == np.int8
    with pytest.raises(ValueError):
        TensorSpec("x", -1, (1,), (1,), np.float32)
    with pytest.raises(ValueError):
        TensorSpec("x", 0, (1, 2), (1,), np.float32)
