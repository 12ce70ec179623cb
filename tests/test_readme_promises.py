"""README promises that had no test: a model file never runs code; `EDGESHIP_TOKEN`;
`serve --threads`; `/v1/recent` keeps the newest 30, newest first; `serve --host 0.0.0.0`
without a token warns. Real processes: `edgeship convert`, `python -m edge_runtime serve`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.procs import REPO, one_error_line
from tests.support.serving import start_server


def _png28() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_keras_file_with_a_lambda_never_runs_its_code(tmp_path):
    """`convert` of a .keras whose Lambda writes a file: exit 2, one line, no file written
    (Keras's safe mode refuses the Lambda's bytecode before anything runs)."""
    import keras

    marker = tmp_path / "pwned"
    # no closure: the path is a literal in the lambda's own code
    side_effect = eval(  # noqa: S307 - the point of the test
        f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x)[1]"
    )

    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Lambda(side_effect),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.save(tmp_path / "evil.keras")
    marker.unlink()  # building the model ran it here, on purpose
    assert not marker.exists()
    out = tmp_path / "run"
    line = one_error_line(
        "edgeship", ["convert", tmp_path / "evil.keras", "--quantize", "float32", "--out", out]
    )
    assert "Keras cannot load the model" in line and "evil.keras" in line, line
    assert not marker.exists(), "loading the model ran its code"
    assert not list(out.glob("*.tflite")) if out.exists() else True


def _tasks(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_serve_threads_and_the_token_from_the_environment(edge_models, tmp_path):
    """`serve --threads 4` runs 3 more interpreter threads than `--threads 1` (counted in
    /proc/PID/task); `EDGESHIP_TOKEN` guards POSTs; /v1/recent holds the newest 30 of 32
    predictions, newest first."""
    model = edge_models["mlp_int8"]
    env = {**os.environ, "EDGESHIP_TOKEN": "env-s3cret"}
    one = start_server([model, "--threads", "1"], tmp_path)
    try:
        four = start_server([model, "--threads", "4"], tmp_path, env=env)
        try:
            time.sleep(0.5)  # both idle: no request has started a worker thread yet
            assert _tasks(four.proc.pid) - _tasks(one.proc.pid) == 3
            image = _png28()
            status, body = four.predict(image)
            assert status == 401, body
            status, body = four.predict(image, Authorization="Bearer wrong")
            assert status == 401, body
            auth = {"Authorization": "Bearer env-s3cret"}
            for i in range(32):
                status, body = four.predict(image, **auth, **{"X-Filename": f"shot-{i:02d}.png"})
                assert status == 200, body
            status, recent = four.json("GET", "/v1/recent")
            assert status == 200
            names = [p["image"] for p in recent["predictions"]]
            assert names == [f"shot-{i:02d}.png" for i in range(31, 1, -1)]
            assert "env-s3cret" not in four.log.read_text()
        finally:
            four.stop()
    finally:
        one.stop()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
@pytest.mark.parametrize("token", [None, "t0ken"])
def test_serve_on_all_addresses_without_a_token_warns(edge_models, tmp_path, token):
    """`serve --host 0.0.0.0` prints the warning itself, once, unless a token is set. It runs
    in a network namespace of its own (`unshare -n`): nothing is exposed to a real network."""
    env = {k: v for k, v in os.environ.items() if k != "EDGESHIP_TOKEN"}
    if token:
        env["EDGESHIP_TOKEN"] = token
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "unshare",
                "-n",
                sys.executable,
                "-m",
                "edge_runtime",
                "serve",
                str(edge_models["mlp_int8"]),
                "--host",
                "0.0.0.0",
                "--port",
                "0",
            ],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        # the `serving` line itself (the warning line also holds "serving on")
        while "\nserving " not in "\n" + log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    text = log.read_text()
    assert "on http://0.0.0.0:" in text, text
    warnings = [ln for ln in text.splitlines() if ln.startswith("warning:")]
    if token:
        assert warnings == [], text
    else:
        assert len(warnings) == 1 and "0.0.0.0 without --token" in warnings[0], text
