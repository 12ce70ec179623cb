"""`--max-model-mb`: a tiny model that declares a huge input is refused before any allocation,
with one line naming the shape and the bound, in predict, bench, info and serve alike."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edge_runtime.metadata.block import _Reader
from tests.support.procs import REPO, one_error_line


def _with_input_side(data: bytes, side: int) -> bytes:
    """`data` with its input tensor's height and width (shape and shape_signature) set to side."""
    r = _Reader(data, "model")
    subgraph = r.table_at(r.vector(r.indirect(0), 2)[0], 0)
    tensors = r.vector(subgraph, 0)[0]
    index = struct.unpack_from("<i", data, r.vector(subgraph, 1)[0])[0]
    tensor = r.table_at(tensors, index)
    out = bytearray(data)
    for slot in (0, 7):  # Tensor.shape, Tensor.shape_signature
        start, n_dims = r.vector(tensor, slot)
        if start and n_dims == 4:
            struct.pack_into("<2i", out, start + 4, side, side)
    return bytes(out)


@pytest.fixture(scope="module")
def huge_models(tmp_path_factory) -> dict[int, Path]:
    """A 2-3 KB model (global average pooling + Dense) declaring 1xNxNx3 float inputs."""
    import tensorflow as tf

    keras = tf.keras
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3), batch_size=1),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    folder = tmp_path_factory.mktemp("huge")
    out = {}
    for side in (16, 16384, 65535):
        out[side] = folder / f"gap_{side}.tflite"
        out[side].write_bytes(_with_input_side(data, side))
    Image.new("RGB", (64, 64), (120, 30, 200)).save(folder / "x.png")
    return out


@pytest.mark.parametrize("side", [16384, 65535])
@pytest.mark.parametrize("command", ["predict", "info", "bench"])
def test_huge_declared_input_is_one_line_exit_2(huge_models, command, side):
    model = huge_models[side]
    extra = {"predict": [model.parent / "x.png"], "bench": ["--runs", "1"], "info": []}[command]
    line = one_error_line("edge_runtime", [command, model, *extra])
    assert f"1x{side}x{side}x3 float32" in line and "--max-model-mb 256" in line, line
    assert "cannot load the model" not in line and "batch" not in line


def test_serve_refuses_it_and_a_raised_bound_lets_a_fitting_model_run(huge_models):
    line = one_error_line("edge_runtime", ["serve", huge_models[16384], "--port", "0"])
    assert "1x16384x16384x3" in line and "--max-model-mb" in line
    small = huge_models[16]  # 3 KB input: runs under a bound of 1 MB
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "predict",
            small,
            small.parent / "x.png",
            "--max-model-mb",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0 and "x.png" in proc.stdout, proc.stderr
    line = one_error_line("edge_runtime", ["info", small, "--max-model-mb", "0.001"])
    assert "1x16x16x3 float32" in line and "--max-model-mb 0.001" in line
