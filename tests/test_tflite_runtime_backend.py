"""The legacy `tflite_runtime` backend (2.14, NumPy 1.x) in its own cached venv.

`tests/support/tflite_env.py` builds the venv (`tflite-runtime==2.14.0`, `numpy<2`, Pillow,
flatbuffers); edgeship is not installed there, the repository root goes on PYTHONPATH.
"""

from __future__ import annotations

import json

import pytest

from tests.support.predictions import (
    REPO,
    assert_predict_matches_desktop,
    assert_raw_outputs_match_desktop,
)

pytestmark = pytest.mark.slow


def test_tflite_env_has_tflite_runtime_and_numpy_1(tflite_env):
    probe = (
        "import json, numpy, tflite_runtime; "
        "print(json.dumps([tflite_runtime.__version__, numpy.__version__]))"
    )
    proc = tflite_env.run(["-c", probe])
    assert proc.returncode == 0, proc.stderr
    runtime, numpy_version = json.loads(proc.stdout)
    assert runtime == "2.14.0"
    assert numpy_version.startswith("1.")


@pytest.mark.parametrize("name", ["mlp_float32", "mlp_int8", "cnn_uint8"])
def test_bare_tflite_runtime_equals_ai_edge_litert(tflite_env, edge_models, tmp_path, name):
    exact = not name.endswith("float32")
    model = edge_models[name]
    assert_raw_outputs_match_desktop(tflite_env, model, "tflite_runtime", tmp_path, exact=exact)


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mlp_float32", (28, 28, 1)), ("mlp_int8", (28, 28, 1)), ("cnn_uint8", (32, 32, 3))],
)
def test_predict_with_tflite_runtime_equals_ai_edge_litert(
    tflite_env, edge_models, tmp_path, name, shape
):
    assert_predict_matches_desktop(
        tflite_env,
        edge_models[name],
        shape,
        tmp_path,
        env_args=("--backend", "tflite_runtime"),
        desktop_args=("--backend", "ai_edge_litert"),
    )


def test_info_reports_the_tflite_runtime_backend(tflite_env, edge_models, tmp_path):
    proc = tflite_env.run(
        ["-m", "edge_runtime", "info", str(edge_models["mlp_int8"]), "--backend", "tflite_runtime"],
        cwd=tmp_path,
        extra_paths=[REPO],
    )
    assert proc.returncode == 0, proc.stderr
    assert "tflite_runtime" in proc.stdout
    assert "2.14.0" in proc.stdout


def test_tflite_runtime_with_numpy_2_is_one_clear_line(tflite_env, edge_models, tmp_path):
    """tflite-runtime 2.14 beside NumPy 2 (this venv's): the error names the fix, not a
    SystemError from the interpreter. The env's own package is linked in, numpy stays 2.x."""
    import os

    import numpy as np

    from tests.support.procs import one_error_line

    assert int(np.__version__.split(".")[0]) >= 2
    site = next((tflite_env.root / "venv" / "lib").glob("python3*/site-packages"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for entry in ("tflite_runtime", "tflite_runtime-2.14.0.dist-info"):
        (mixed / entry).symlink_to(site / entry)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(mixed), str(REPO)]))
    line = one_error_line(
        "edge_runtime",
        ["info", edge_models["mlp_int8"], "--backend", "tflite_runtime"],
        env=env,
        cwd=tmp_path,
    )
    assert "tflite-runtime 2.14.0 is built against NumPy 1.x" in line
    assert "pip install 'numpy<2'" in line and f"numpy={np.__version__}" in line
    assert "SystemError" not in line
