"""The standard TFLite Model Metadata: written by edgeship convert/label/deploy, read by
edge_runtime.

The independent reader is the schema module shipped in mediapipe's wheel; the independent
writer is a ModelMetadata built here with that module and a labels zip packed with `zipfile`.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_runtime import EdgeClassifier
from edge_runtime.metadata.block import read_metadata
from edge_runtime.metadata.standard import MetadataWarning, read_standard_metadata
from edge_runtime.metadata.standard_write import embed_all_metadata
from edgeship.cli import app
from tests.support.procs import REPO
from tests.support.stock_metadata import NAMES, hand_packed, mp_schema

runner = CliRunner()


def load_quietly(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = EdgeClassifier.load(path, **kwargs)
    return clf, [w for w in caught if issubclass(w.category, MetadataWarning)]


# --- written: round trip, and mediapipe's schema module reads it ---------------------------


def test_written_metadata_parses_with_mediapipes_schema(edge_models, tmp_path):
    meta = {**read_metadata(edge_models["mlp_int8"]), "author": "Ada", "license": "MIT"}
    path = tmp_path / "m.tflite"
    path.write_bytes(embed_all_metadata(edge_models["mlp_int8"].read_bytes(), meta))

    s = mp_schema()
    from edge_runtime.metadata.block import list_metadata

    raw = list_metadata(path.read_bytes())["TFLITE_METADATA"]
    assert s.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)
    parsed = s.ModelMetadataT.InitFromObj(s.ModelMetadata.GetRootAs(raw, 0))
    assert parsed.author == b"Ada" and parsed.license == b"MIT"
    assert parsed.name.startswith(b"edgeship") and b"edgeship" in parsed.version
    inp = parsed.subgraphMetadata[0].inputTensorMetadata[0]
    assert inp.content.contentPropertiesType == s.ContentProperties.ImageProperties
    assert inp.content.contentProperties.colorSpace == s.ColorSpaceType.GRAYSCALE
    norm = inp.processUnits[0].options  # scale 1/255, offset 0: mean 0, std 255
    assert list(norm.mean) == [0.0] and list(norm.std) == pytest.approx([255.0])
    out = parsed.subgraphMetadata[0].outputTensorMetadata[0]
    labels = out.associatedFiles[0]
    assert labels.type == s.AssociatedFileType.TENSOR_AXIS_LABELS
    with zipfile.ZipFile(path) as z:  # the labels, packed in the standard way
        assert z.read(labels.name.decode()).decode().splitlines() == meta["class_names"]
    # our reader agrees, and the edgeship block is still there
    std = read_standard_metadata(path.read_bytes())
    assert std.labels == tuple(meta["class_names"]) and std.author == "Ada"
    assert read_metadata(path)["class_names"] == meta["class_names"]
    # and it is still an ordinary .tflite: the same answers as the file without it
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    plain = EdgeClassifier.load(edge_models["mlp_int8"]).predict_proba(x)
    np.testing.assert_array_equal(EdgeClassifier.load(path).predict_proba(x), plain)


def test_offset_normalization_round_trips(edge_models):
    """Scale 1/127.5 and offset -1 (pixels to [-1, 1], as MobileNet's): mediapipe's schema
    reads NormalizationOptions mean 127.5, std 127.5 and the range -1..1; (255 - mean) / std
    is 1.0 (a sign flipped in the mean would make it 3.0)."""
    from edge_runtime.metadata.block import list_metadata

    meta = {
        "class_names": NAMES,
        "input": {"shape": [32, 32, 3], "scale": 1 / 127.5, "offset": -1.0},
    }
    data = embed_all_metadata(edge_models["cnn_float32"].read_bytes(), meta)
    s = mp_schema()
    raw = list_metadata(data)["TFLITE_METADATA"]
    inp = s.ModelMetadataT.InitFromObj(s.ModelMetadata.GetRootAs(raw, 0))
    inp = inp.subgraphMetadata[0].inputTensorMetadata[0]
    norm = inp.processUnits[0].options
    assert list(norm.mean) == pytest.approx([127.5] * 3)
    assert list(norm.std) == pytest.approx([127.5] * 3)
    assert list(inp.stats.min) == pytest.approx([-1.0] * 3)
    assert list(inp.stats.max) == pytest.approx([1.0] * 3)
    ours = read_standard_metadata(data)
    mean, std = np.array(ours.mean), np.array(ours.std)
    assert (255 - mean) / std == pytest.approx(1.0) and (0 - mean) / std == pytest.approx(-1.0)


def test_convert_writes_it_in_every_mode(fashion_runs):
    for mode in ("int8", "float32"):
        path = fashion_runs["mlp"] / f"model_{mode}.tflite"
        std = read_standard_metadata(path.read_bytes())
        assert std is not None and not std.problems
        assert std.labels == tuple(read_metadata(path)["class_names"])
        assert std.mean == (0.0,) and std.std == pytest.approx((255.0,))
        assert std.color_space == "grayscale" and "fashion-mnist" in std.name


# --- read: a stock model's packed labels and per-channel normalization ---------------------


def test_hand_packed_stock_model_is_named_without_labels(edge_models, tmp_path):
    path = tmp_path / "stock.tflite"
    path.write_bytes(hand_packed(edge_models["cnn_uint8"].read_bytes(), NAMES))
    clf, caught = load_quietly(path)
    assert not caught
    assert clf.class_names == tuple(NAMES) and clf.names_source == "standard metadata"
    # precedence: --labels beats it
    other = [f"other {i}" for i in range(10)]
    assert EdgeClassifier.load(path, labels=other).class_names == tuple(other)
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "predict", str(path), str(image), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["label"] in NAMES
    info = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "info", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert (
        "(from standard metadata)" in info.stdout and "labels=names.txt (10 names)" in info.stdout
    )


def test_rewriting_the_edgeship_block_keeps_the_packed_labels(edge_models, tmp_path):
    """`embed_metadata` (public) on a model with standard metadata: the labels zip survives the
    rewrite, readable by `zipfile` and named by the reader, with no warning."""
    from edge_runtime.metadata.block import embed_metadata

    stock = hand_packed(edge_models["cnn_uint8"].read_bytes(), NAMES)
    meta = read_metadata(edge_models["cnn_uint8"]) or {}
    meta = {**meta, "class_names": None, "input": {**meta.get("input", {}), "resize": "crop"}}
    meta = {k: v for k, v in meta.items() if v is not None}
    path = tmp_path / "relabelled.tflite"
    path.write_bytes(embed_metadata(stock, meta))
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["names.txt"]
        assert z.read("names.txt").decode().splitlines() == list(NAMES)
    clf, caught = load_quietly(path)
    assert not caught and clf.class_names == tuple(NAMES)
    assert read_metadata(path)["input"]["resize"] == "crop"
    # twice: still one archive with one file, not two stacked
    path.write_bytes(embed_metadata(path.read_bytes(), meta))
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == ["names.txt"]


def test_a_model_without_class_names_names_no_labels_file(edge_models, tmp_path):
    """No class names, no packed file: the standard metadata must not name a missing one
    (MediaPipe and the reader would look for it)."""
    meta = {k: v for k, v in read_metadata(edge_models["mlp_int8"]).items() if k != "class_names"}
    path = tmp_path / "nameless.tflite"
    path.write_bytes(embed_all_metadata(edge_models["mlp_int8"].read_bytes(), meta))
    s = mp_schema()
    from edge_runtime.metadata.block import list_metadata

    raw = list_metadata(path.read_bytes())["TFLITE_METADATA"]
    parsed = s.ModelMetadataT.InitFromObj(s.ModelMetadata.GetRootAs(raw, 0))
    assert not parsed.subgraphMetadata[0].outputTensorMetadata[0].associatedFiles
    clf, caught = load_quietly(path)
    assert not caught and clf.class_names == tuple(str(i) for i in range(10))


def test_edgeship_block_beats_standard_labels(edge_models, tmp_path):
    path = tmp_path / "both.tflite"
    path.write_bytes(hand_packed(edge_models["mlp_int8"].read_bytes(), NAMES))
    clf, _ = load_quietly(path)
    assert clf.class_names == tuple(read_metadata(edge_models["mlp_int8"])["class_names"])
    assert clf.names_source == "edgeship metadata"


def test_per_channel_normalization_is_applied(edge_models, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    mean, std = [10.0, 120.0, 250.0], [2.0, 50.0, 100.0]
    path = tmp_path / "norm.tflite"
    path.write_bytes(hand_packed(edge_models["cnn_float32"].read_bytes(), NAMES, mean, std))
    clf, caught = load_quietly(path)
    assert not caught and clf.scaling_source == "standard metadata"
    x = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    expected = (x.astype(np.float32) - np.float32(mean)) / np.float32(std)
    interp = Interpreter(model_path=str(path))
    interp.resize_tensor_input(0, [6, 32, 32, 3])
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], expected)
    interp.invoke()
    want = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(clf.predict_proba(x), want, atol=1e-5)
    assert clf.describe()["raw_pixel_scale"] == pytest.approx([1 / s for s in std])


# --- read: broken metadata warns once and the model still runs ----------------------------


def _lying_zip(factor: int):
    """The zip's central directory says the labels are `factor` times their size
    (compressed and uncompressed size fields)."""

    def damage(data: bytes) -> bytes:
        cd = data.rindex(b"PK\x01\x02")
        size = struct.unpack_from("<I", data, cd + 24)[0]
        lie = struct.pack("<II", size * factor, size * factor)
        return data[: cd + 20] + lie + data[cd + 28 :]

    return damage


def _corrupt_metadata(data: bytes) -> bytes:
    start = data.index(b"M001") - 4
    return data[: start + 8] + b"\xff" * 24 + data[start + 32 :]


@pytest.mark.parametrize(
    ("name", "damage", "fragment"),
    [
        ("corrupt", _corrupt_metadata, "TFLITE_METADATA is corrupt"),
        ("truncated zip", lambda d: d[:-30], "cannot be read"),
        ("zip lies: 3x", _lying_zip(3), "cannot be read"),
        ("zip lies: 1 GB", _lying_zip(2**30 // 128), "cannot be read"),
        ("wrong count", None, "has 9 names for 10 classes"),
    ],
)
def test_broken_standard_metadata_warns_once_and_runs(
    edge_models, tmp_path, name, damage, fragment
):
    model = edge_models["cnn_uint8"].read_bytes()
    data = hand_packed(model, NAMES[:9] if damage is None else NAMES)
    if damage is not None:
        data = damage(data)
    path = tmp_path / "broken.tflite"
    path.write_bytes(data)
    clf, caught = load_quietly(path)
    assert len(caught) == 1 and fragment in str(caught[0].message), [str(w.message) for w in caught]
    assert clf.class_names == tuple(str(i) for i in range(10))
    x = np.zeros((1, 32, 32, 3), np.uint8)
    plain = EdgeClassifier.load(edge_models["cnn_uint8"]).predict_proba(x)
    np.testing.assert_array_equal(clf.predict_proba(x), plain)
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "predict", str(path), str(image)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and fragment in warned[0], proc.stderr
    assert "Traceback" not in proc.stderr


# --- label: --author/--license, the labels packed ------------------------------------------


def test_label_writes_standard_metadata_with_author_and_license(edge_models, tmp_path):
    path = tmp_path / "stock.tflite"
    shutil.copyfile(edge_models["cnn_uint8"], path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    result = runner.invoke(
        app, ["label", str(path), "--labels", str(labels), "--author", "Ada", "--license", "MIT"]
    )
    assert result.exit_code == 0, result.output
    std = read_standard_metadata(path.read_bytes())
    assert (std.author, std.license, std.labels) == ("Ada", "MIT", tuple(NAMES))
    assert zipfile.ZipFile(path).namelist() == ["labels.txt"]
    # labelling again replaces, never stacks, the packed zip
    result = runner.invoke(app, ["label", str(path), "--author", "Grace"])
    assert result.exit_code == 0, result.output
    std = read_standard_metadata(path.read_bytes())
    assert (std.author, std.labels) == ("Grace", tuple(NAMES))
    assert path.read_bytes().count(b"PK\x05\x06") == 1
