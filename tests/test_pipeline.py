"""`edgeship pipeline` end to end: one command from Fashion-MNIST to a benchmark report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeship.cli import app


@pytest.mark.slow
def test_pipeline_trains_converts_and_benchmarks(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["pipeline", "--limit", "400", "--epochs", "1", "--bench-limit", "200", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"Report: {out / 'bench' / 'report.md'}"
    meta = json.loads((out / "model.json").read_text())
    modes = ("float32", "dynamic", "float16", "int8", "int16x8")
    from edge_runtime.metadata.block import read_metadata

    for mode in modes:  # each file is that mode, and its conversion check ran and passed
        quant = read_metadata(out / f"model_{mode}.tflite")["quantization"]
        assert quant["mode"] == mode
        check = quant["check"]
        assert check["samples"] > 0 and 0.9 <= check["agreement"] <= 1.0, (mode, check)
        if mode == "float32":  # the same float math as Keras
            assert check["max_abs_diff"] < 1e-4, check
        else:
            assert 0 < check["max_abs_diff"] < 0.5, (mode, check)
    report = json.loads((out / "bench" / "report.json").read_text())
    names = {m["quantization"]: m for m in report["models"] if m["format"] == "tflite"}
    assert set(names) == set(modes)
    keras = next(m for m in report["models"] if m["format"] == "keras")
    # The bench measured the model this run trained: same architecture, same test images.
    assert keras["size_bytes"] == (out / "model.keras").stat().st_size
    assert report["dataset"]["name"] == meta["dataset"]["name"]
    assert (out / "bench" / "report.md").read_text().count(".png") >= 4


def test_pipeline_rejects_a_bad_bench_limit_before_training(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pipeline", "--bench-limit", "0", "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --limit must be at least 1")
    assert not out.exists()
