"""The runtime on an emulated Raspberry Pi: arm64 CPython 3.11 under qemu-aarch64 10.

The environment (Debian bookworm arm64 packages + aarch64 wheels of ai-edge-litert 2.3.0,
NumPy, Pillow) is built once and cached by `tests/support/arm64.py`. qemu is slow: few images.
"""

from __future__ import annotations

import json

import pytest

from edgeship.deploy.pi.requirements import PINS
from tests.support.predictions import (
    assert_predict_matches_desktop,
    assert_raw_outputs_match_desktop,
)

pytestmark = [pytest.mark.emulated, pytest.mark.slow]

ENV_PROBE = (
    "import json, platform, sys; from importlib.metadata import version; "
    "import ai_edge_litert.interpreter, numpy, PIL; "
    "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
    "'litert': version('ai-edge-litert'), 'numpy': numpy.__version__, "
    "'executable': sys.executable}))"
)


def test_emulated_python_is_bookworm_arm64_with_the_runtime(arm64_python):
    proc = arm64_python.run(["-c", ENV_PROBE])
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout)
    assert probe["machine"] == "aarch64"
    assert probe["python"].startswith("3.11.")
    assert probe["litert"] == PINS["ai-edge-litert"]
    assert probe["executable"].startswith(str(arm64_python.sysroot))


@pytest.mark.parametrize("name", ["mlp_float32", "mlp_int8"])
def test_bare_interpreter_under_emulation_equals_desktop(arm64_python, edge_models, tmp_path, name):
    assert_raw_outputs_match_desktop(
        arm64_python, edge_models[name], "ai_edge_litert", tmp_path, exact=name.endswith("int8")
    )


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mlp_float32", (28, 28, 1)), ("mlp_int8", (28, 28, 1)), ("cnn_uint8", (32, 32, 3))],
)
def test_predict_under_emulation_equals_desktop(arm64_python, edge_models, tmp_path, name, shape):
    assert_predict_matches_desktop(arm64_python, edge_models[name], shape, tmp_path)
