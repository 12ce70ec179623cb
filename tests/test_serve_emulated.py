"""`python -m edge_runtime serve` from the offline bundle in each deploy target's emulated
userland (trixie-arm64 CPython 3.13, bookworm-arm64 3.11, bookworm-armhf 3.11 on tflite-runtime;
qemu 10, tests/support/pi.py): the bundle's own pure-Python Starlette/Uvicorn wheels run there,
the service answers the desktop's label on the bundled sample over real HTTP, and SIGTERM stops
it with exit 0.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest

from tests.test_deploy_targets_emulated import device, offline_bundle  # noqa: F401 - fixtures

pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def test_serve_on_each_target(device, offline_bundle):  # noqa: F811 - the fixtures above
    name, py = device
    manifest = json.loads((offline_bundle / "manifest.json").read_text())
    model = manifest["models"][0]
    log = offline_bundle.parent / f"serve-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            py.command(["-m", "edge_runtime", "serve", model["file"], "--port", "0"]),
            cwd=offline_bundle,
            env=py.environ(extra_paths=[offline_bundle]),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        port, deadline = None, time.monotonic() + 300  # qemu: seconds to tens of seconds
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("serving ") and "http://127.0.0.1:" in line:
                    port = int(line.split("http://127.0.0.1:")[1].split()[0])
            time.sleep(0.2)
        assert port is not None, (name, log.read_text()[-3000:])
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=(offline_bundle / model["sample"]).read_bytes(),
            headers={"Content-Type": "image/png"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            got = json.load(r)
        assert (got["index"], got["label"]) == (model["index"], model["label"]), name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as r:
            assert json.load(r)["status"] == "ok"
    finally:
        proc.terminate()  # SIGTERM
        code = proc.wait(timeout=120)
    assert code == 0, (name, log.read_text()[-3000:])
