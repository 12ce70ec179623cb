"""The bundle, unpacked and run by the emulated Raspberry Pi Python (arm64 CPython 3.11, qemu).

The emulated interpreter has the aarch64 wheels of the bundle's pins (ai-edge-litert 1.4.0,
NumPy, Pillow, flatbuffers) on its path; the bundle folder goes first on PYTHONPATH, so its
`edge_runtime/` is the code that runs, exactly as `venv/bin/python -m edge_runtime` on a Pi.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from deploy.requirements import PINS

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def unpacked(deploy_bundle, tmp_path_factory):
    dest = tmp_path_factory.mktemp("pi")
    with tarfile.open(deploy_bundle, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def test_emulated_pi_has_the_bundle_pins(arm64_python):
    wheels = " ".join(arm64_python.manifest["wheels"])
    for name in ("ai-edge-litert", "numpy", "pillow", "flatbuffers"):
        assert f"{name.replace('-', '_')}-{PINS[name]}-" in wheels, name


def test_bundle_under_emulation_gives_the_desktops_answers(arm64_python, unpacked):
    manifest = json.loads((unpacked / "manifest.json").read_text())
    proc = arm64_python.run(["verify.py"], cwd=unpacked, timeout=300)
    assert proc.returncode == 0 and "manifest ok" in proc.stdout, proc.stderr

    for model in manifest["models"]:
        proc = arm64_python.run(
            ["-m", "edge_runtime", "predict", "--json", model["file"], model["sample"]],
            cwd=unpacked,
            extra_paths=[unpacked],
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (got["index"], got["label"]) == (model["index"], model["label"]), model["file"]
        assert got["confidence"] == pytest.approx(model["confidence"], abs=0.02)


def test_bench_under_emulation(arm64_python, unpacked):
    proc = arm64_python.run(
        [
            "-m",
            "edge_runtime",
            "bench",
            "models/model_int8.tflite",
            "--json",
            "--runs",
            "20",
            "--warmup",
            "2",
        ],
        cwd=unpacked,
        extra_paths=[unpacked],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["machine"] == "aarch64" and data["python"].startswith("3.11")
    assert data["backend"] == "ai_edge_litert" and data["backend_version"] == PINS["ai-edge-litert"]
    assert data["latency_us"]["p50"] > 0 and data["runs"] == 20
