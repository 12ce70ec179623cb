"""`python -m studies.edge_speed` runs with LiteRT's native chatter kept off stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support.procs import REPO


def test_edge_speed_keeps_the_xnnpack_line_off_stderr(edge_models, tmp_path):
    from edgeship.train.datasets import load_dataset
    from edgeship.train.errors import DatasetError

    try:
        data = load_dataset("fashion-mnist")
    except DatasetError as err:  # an offline machine without the files; any other error fails
        pytest.skip(f"Fashion-MNIST not available: {err}")
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "studies.edge_speed",
            "--model",
            str(edge_models["mlp_int8"]),
            "--repeats",
            "1",
            "--calls",
            "10",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
    figures = json.loads(out.read_text())
    single, batch, cold = figures["single"], figures["batch"], figures["cold"]
    # what was asked, and what the model does on the 10,000 test images, recomputed here with a
    # bare interpreter (not edge_runtime): the benchmark's accuracy is the model's
    x, y = data.x_test, data.y_test
    assert (single["calls"], single["repeats"]) == (10, 1)
    assert batch["images"] == len(x) == 10_000 and batch["agreement_with_raw"] == 1.0
    bare = _bare_accuracy(edge_models["mlp_int8"], x, y)
    assert batch["accuracy"] == pytest.approx(bare, abs=5e-5)  # rounded to 4 decimals
    assert min(single["raw_us"], single["predict_us"], single["floor_us"]) > 0
    assert single["ratio"] == pytest.approx(single["predict_us"] / single["raw_us"], rel=0.01)
    assert 0 < cold["import_and_load_s"] <= cold["process_wall_s"]


def _bare_accuracy(model, x, y) -> float:
    """Top-1 accuracy of `model` on uint8 images x with a bare LiteRT interpreter, p/255 in."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    (inp,) = interp.get_input_details()
    interp.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    feed = x.reshape(len(x), *inp["shape"][1:]).astype(np.float32) / 255.0
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        feed = np.clip(np.round(feed / scale + zero), info.min, info.max)
    interp.set_tensor(inp["index"], feed.astype(inp["dtype"]))
    interp.invoke()
    return float((interp.get_tensor(out["index"]).argmax(1) == y).mean())
