"""`python -m benchmarks.edge_speed` runs with LiteRT's native chatter kept off stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.procs import REPO


def test_edge_speed_keeps_the_xnnpack_line_off_stderr(edge_models, tmp_path):
    from train.datasets import load_dataset
    from train.errors import DatasetError

    try:
        load_dataset("fashion-mnist")
    except DatasetError as err:  # an offline machine without the files; any other error fails
        pytest.skip(f"Fashion-MNIST not available: {err}")
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge_speed", "--model", str(edge_models["mlp_int8"]),
         "--repeats", "1", "--calls", "10", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XNNPACK" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
    figures = json.loads(out.read_text())
    assert set(figures) >= {"single", "batch", "cold"}
