"""Each deploy target's bundle, run in an emulated userland of that target under qemu 10.

The userlands are Debian's own packages of each target (trixie arm64 CPython 3.13, bookworm
arm64 CPython 3.11, bookworm armhf CPython 3.11 with Debian's python3-numpy and python3-pil),
run with `qemu-aarch64 -L ROOT` / `qemu-arm -L ROOT` from Debian 13's qemu-user
(tests/support/pi.py). The runtime comes from the bundle's own wheels (`--with-wheels`,
wheels/<target>/), unpacked as pip would install them (no binfmt here: an emulated Python cannot
run pip's or venv's subprocesses), so what runs is exactly what an offline Pi installs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from edge_runtime.device.targets import TARGET_NAMES, get_target
from edgeship.deploy.pi.requirements import TARGET_PINS

pytestmark = [pytest.mark.emulated, pytest.mark.slow]


@pytest.fixture(scope="module")
def offline_bundle(deploy_run, tmp_path_factory) -> Path:
    """`edgeship deploy bundle --with-wheels` (all targets), unpacked."""
    from edgeship.deploy.pi.bundle import build_bundle

    out = tmp_path_factory.mktemp("offline") / "pi-offline.tar.gz"
    info = build_bundle(deploy_run, out, with_wheels=True)
    dest = tmp_path_factory.mktemp("pi")
    with tarfile.open(info.path, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest / info.top


@pytest.fixture(scope="module", params=TARGET_NAMES)
def device(request, offline_bundle):
    """(target name, the emulated userland with the bundle's wheels for it on its path)."""
    from tests.support import EnvironmentUnavailable
    from tests.support.pi import ensure_pi_python, site_from_wheels

    name = request.param
    try:
        py = ensure_pi_python(name)
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated {name} userland unavailable: {exc}")
    wheels = sorted((offline_bundle / "wheels" / name).glob("*.whl"))
    assert len(wheels) == len(TARGET_PINS[name]), "the bundle carries every wheel"
    return name, py.with_site(site_from_wheels(wheels))


def last_json(proc) -> dict:
    assert proc.returncode in (0, 1), f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_install_sh_detection_picks_the_target(device, offline_bundle):
    """What install.sh evals: the target, offline from the bundled wheels."""
    name, py = device
    with open(offline_bundle / "edge_runtime/device/targets.py") as script:  # as install.sh does
        proc = subprocess.run(
            py.command(["-", "--shell", "--bundle", "."]),
            cwd=offline_bundle,
            env=py.environ(),
            stdin=script,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert values["TARGET"] == f"'{name}'" and values["OFFLINE"] == "'1'"
    assert values["REQUIREMENTS"] == f"'requirements-{name}.txt'"
    assert values["SYSTEM_SITE"] == ("'1'" if get_target(name).system_site else "''")


AGREEMENT_IMAGES = 100

# Both models' `predict --json` (the CLI's own code) in ONE emulated process: a start costs
# seconds under qemu.
PREDICT_ALL = """
import sys
from edge_runtime.cli import main
sep = sys.argv.index("--")
for model in sys.argv[1:sep]:
    code = main(["predict", "--json", model, *sys.argv[sep + 1:]])
    sys.stdout.flush()
    if code:
        sys.exit(code)
"""


@pytest.fixture(scope="module")
def agreement_images(tmp_path_factory) -> list[Path]:
    """The first 100 Fashion-MNIST test images as PNGs (tests/support/agreement.py's)."""
    from tests.support.agreement import write_test_images

    folder = tmp_path_factory.mktemp("agreement") / "t10k"
    write_test_images(folder, AGREEMENT_IMAGES)
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="module")
def desktop_answers(offline_bundle, agreement_images) -> dict[str, list[dict]]:
    """`python -m edge_runtime predict --json` of each bundled model here, on the desktop."""
    import sys

    manifest = json.loads((offline_bundle / "manifest.json").read_text())
    answers = {}
    for model in manifest["models"]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_runtime",
                "predict",
                "--json",
                model["file"],
                *map(str, agreement_images),
            ],
            cwd=offline_bundle,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        answers[model["file"]] = [json.loads(ln) for ln in proc.stdout.splitlines()]
    return answers


def test_bundle_predicts_as_the_desktop(device, offline_bundle, agreement_images, desktop_answers):
    """The README's agreement table, as a test: on the first 100 Fashion-MNIST test images
    each target answers what the desktop answers: the same line for int8, the same top-1 and
    confidences within 1e-6 for float32."""
    name, py = device
    models = list(desktop_answers)
    proc = py.run(
        ["-c", PREDICT_ALL, *models, "--", *map(str, agreement_images)],
        cwd=offline_bundle,
        extra_paths=[offline_bundle],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == len(models) * AGREEMENT_IMAGES, proc.stdout[-2000:]
    for i, model in enumerate(models):
        got = lines[i * AGREEMENT_IMAGES : (i + 1) * AGREEMENT_IMAGES]
        desk = desktop_answers[model]
        assert [g["index"] for g in got] == [d["index"] for d in desk], (name, model)
        if "int8" in model:
            assert got == desk, (name, model)
        else:
            for g, d in zip(got, desk, strict=True):
                assert g["image"] == d["image"] and g["label"] == d["label"]
                # `predict --json` prints 6 decimals: 1e-6 is one unit of the last digit
                units = round(g["confidence"] * 1e6) - round(d["confidence"] * 1e6)
                assert abs(units) <= 1, (name, g, d)


def test_doctor_on_the_emulated_device(device, offline_bundle):
    name, py = device
    target = get_target(name)
    proc = py.run(
        ["-m", "edge_runtime", "doctor", "--json", "--dir", ".", "models/model_int8.tflite"],
        cwd=offline_bundle,
        extra_paths=[offline_bundle],
        timeout=600,
    )
    report = last_json(proc)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["device"]["target"] == name and report["device"]["bits"] == target.bits
    assert report["device"]["os_codename"] == target.codename, "the userland's os-release"
    assert report["device"]["python"].startswith(target.python + ".")
    assert checks["os"]["status"] == "ok" and checks["python"]["status"] == "ok"
    version = TARGET_PINS[name][target.runtime_dist]
    assert checks["runtime"] == {
        "name": "runtime",
        "status": "ok",
        "detail": f"{target.runtime} {version}",
        "fix": None,
    }
    assert checks["numpy_abi"]["status"] == "ok" and checks["glibc"]["status"] == "ok"
    if target.runtime == "tflite_runtime":  # its armv7l build creates no XNNPACK delegate
        assert checks["xnnpack"]["status"] == "warn" and "64-bit" in checks["xnnpack"]["fix"]
    else:
        assert checks["xnnpack"]["status"] == "ok", checks["xnnpack"]
    if target.system_site:
        assert checks["numpy"]["detail"].startswith("NumPy 1."), "Debian's python3-numpy"


def test_doctor_32_bit_pi4_tree(offline_bundle, tmp_path):
    """A 32-bit Bookworm on a Pi 4 (a fake /proc + /sys tree, the userland's own os-release)."""
    from tests.support.pi import ensure_pi_python, site_from_wheels

    py = ensure_pi_python("bookworm-armhf")
    py = py.with_site(
        site_from_wheels(sorted((offline_bundle / "wheels/bookworm-armhf").glob("*")))
    )
    root = tmp_path / "pi4"
    (root / "etc").mkdir(parents=True)
    shutil.copy(py.sysroot / "usr/lib/os-release", root / "etc/os-release")
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("48200\n")
    proc = py.run(
        ["-m", "edge_runtime", "doctor", "--json", "--root", str(root)],
        cwd=offline_bundle,
        extra_paths=[offline_bundle],
        timeout=600,
    )
    report = last_json(proc)
    checks = {c["name"]: c for c in report["checks"]}
    assert proc.returncode == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert report["device"]["board"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert report["device"]["bits"] == 32 and report["device"]["target"] == "bookworm-armhf"
    assert "32-bit userland: target bookworm-armhf" in checks["os"]["detail"]
    assert checks["temperature"]["detail"] == "48.2 °C"
    assert checks["throttling"]["status"] == "skip"


def test_quantizer_models_on_the_emulated_device(device, offline_bundle, quantizer_models,
                                                 wide_collapsing, tmp_path):  # fmt: skip
    """Every mode ai-edge-quantizer makes, the hybrid-rescued int8 included (issue 25), runs on
    each target with the bundle's runtime and answers as the desktop's LiteRT 2.3 does."""
    import numpy as np

    from tests.test_quant_engine import PREDICT_EACH, assert_same_answers

    name, py = device
    x = wide_collapsing.x[:16]
    np.save(tmp_path / "x.npy", x)
    proc = py.run(
        ["-c", PREDICT_EACH, "", str(tmp_path / "x.npy"), *map(str, quantizer_models.values())],
        cwd=offline_bundle,
        extra_paths=[offline_bundle],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    by_path = {line["model"]: np.asarray(line["probs"]) for line in lines}
    got = {mode: by_path[str(path)] for mode, path in quantizer_models.items()}
    assert_same_answers(got, quantizer_models, x, name)
