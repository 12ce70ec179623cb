"""edge_runtime.metadata.block on real converted models: round trip, sidecar, bad files."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_runtime.errors import ModelFileError
from edge_runtime.metadata.block import (
    CONVERSION_METADATA,
    METADATA_NAME,
    embed_metadata,
    list_metadata,
    read_metadata,
)


def test_round_trip_keeps_conversion_metadata_and_replaces(edge_models):
    data = edge_models["cnn_float32"].read_bytes()
    assert read_metadata(data) is None
    assert CONVERSION_METADATA in list_metadata(data)

    once = embed_metadata(data, {"class_names": ["a", "b"], "x": 1.5})
    assert read_metadata(once) == {"class_names": ["a", "b"], "x": 1.5}
    twice = embed_metadata(once, {"y": "é"})
    assert read_metadata(twice) == {"y": "é"}
    names = list(list_metadata(twice))
    assert names.count(METADATA_NAME) == 1
    assert CONVERSION_METADATA in names
    assert list_metadata(twice)[CONVERSION_METADATA] == list_metadata(data)[CONVERSION_METADATA]


def test_embedded_model_still_runs(edge_models):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    data = edge_models["cnn_float32"].read_bytes()
    results = []
    for content in (data, embed_metadata(data, {"a": 1})):
        interp = Interpreter(model_content=content)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.set_tensor(inp["index"], np.full((1, 32, 32, 3), 0.5, np.float32))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    np.testing.assert_array_equal(results[0], results[1])


def test_read_from_path_and_fixture_metadata(edge_models):
    meta = read_metadata(edge_models["mlp_int8"])
    assert meta["class_names"][3] == "class_3"
    assert meta["input"]["background"] == "dark"


def test_sidecar_fallback_and_none(edge_models, tmp_path):
    model = tmp_path / "plain.tflite"
    shutil.copy(edge_models["cnn_float32"], model)
    assert read_metadata(model) is None
    (tmp_path / "plain.json").write_text(json.dumps({"class_names": list("abcdefghij")}))
    assert read_metadata(model)["class_names"][0] == "a"
    assert read_metadata(model, sidecar=False) is None
    (tmp_path / "plain.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_metadata(model)


def test_embedded_wins_over_sidecar(edge_models, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(edge_models["mlp_float32"], model)
    (tmp_path / "m.json").write_text(json.dumps({"class_names": ["side"]}))
    assert read_metadata(model)["class_names"][0] == "class_0"


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"\x10\x00\x00", "truncated"),
        (b"PK\x03\x04" + b"\x00" * 40, "not a TensorFlow Lite model"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.tflite"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        read_metadata(path)


def test_truncated_real_model(edge_models):
    data = edge_models["mlp_int8"].read_bytes()
    with pytest.raises(ModelFileError, match="truncated"):
        read_metadata(data[: len(data) // 3])


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found.*path="):
        read_metadata(tmp_path / "nope.tflite")


def test_unreadable_block_is_one_warning_and_the_model_runs(edge_models, tmp_path):
    """An `edgeship` block nested 200,000 deep (RecursionError in json) -> one warning line."""
    import subprocess
    import sys

    from PIL import Image

    from edge_runtime.metadata.block import embed_metadata

    model = tmp_path / "deep.tflite"
    model.write_bytes(embed_metadata(edge_models["mlp_float32"].read_bytes(), b"[" * 200_000))
    Image.new("L", (28, 28), 200).save(tmp_path / "x.png")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "predict", str(model), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "nested" in lines[0], lines
    assert "x.png" in proc.stdout
