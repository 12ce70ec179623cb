"""`python -m edge_runtime serve` from the unpacked bundle under the emulated Raspberry Pi Python
(arm64 CPython 3.11, qemu): the bundle's pinned Starlette/Uvicorn wheels run there, it answers
the desktop's label on the bundled sample over real HTTP, and SIGTERM stops it with exit 0.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import urllib.request

import pytest

pytestmark = pytest.mark.emulated


def test_serve_under_emulation(arm64_python, deploy_bundle, tmp_path):
    with tarfile.open(deploy_bundle, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (top,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((top / "manifest.json").read_text())
    model = manifest["models"][0]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            arm64_python.command(["-m", "edge_runtime", "serve", model["file"], "--port", "0"]),
            cwd=top,
            env=arm64_python.environ(extra_paths=[top]),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        port, deadline = None, time.monotonic() + 300  # qemu: tens of seconds to start
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("serving ") and "http://127.0.0.1:" in line:
                    port = int(line.split("http://127.0.0.1:")[1].split()[0])
            time.sleep(0.2)
        assert port is not None, log.read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=(top / model["sample"]).read_bytes(),
            headers={"Content-Type": "image/png"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            got = json.load(r)
        assert (got["index"], got["label"]) == (model["index"], model["label"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        proc.terminate()  # SIGTERM
        code = proc.wait(timeout=120)
    assert code == 0, log.read_text()
