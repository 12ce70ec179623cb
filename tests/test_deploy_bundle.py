"""edgeship deploy bundle: contents, determinism, manifest verification, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_runtime.device.targets import TARGET_NAMES, get_target
from edgeship.cli import app
from edgeship.deploy.pi.requirements import LITERT_PINS, TARGET_PINS, TFLITE_PINS

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _extract(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def test_bundle_contents(deploy_run, tmp_path):
    out = tmp_path / "pi.tar.gz"
    result = runner.invoke(app, ["deploy", "bundle", str(deploy_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "pi.tar.gz" in result.stdout and "2 models" in result.stdout

    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert {n.split("/")[0] for n in names} == {"pi"}, "one top folder"
    assert all(m.mtime == members[0].mtime and m.uid == 0 for m in members)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    for want in (
        "pi/edge_runtime/__init__.py",
        "pi/edge_runtime/__main__.py",
        "pi/models/model_int8.tflite",
        "pi/models/model_float32.tflite",
        "pi/edge_runtime/device/targets.py",
        "pi/requirements-trixie-arm64.txt",
        "pi/requirements-bookworm-arm64.txt",
        "pi/requirements-bookworm-armhf.txt",
        "pi/install.sh",
        "pi/verify.py",
        "pi/README.md",
        "pi/manifest.json",
    ):
        assert want in names, want
    assert next(m for m in members if m.name == "pi/install.sh").mode & 0o111

    top = _extract(out, tmp_path / "x")
    manifest = json.loads((top / "manifest.json").read_text())
    files = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((top / rel).read_bytes()).hexdigest() == digest, rel
    # Every target by default, each with its own exact pins.
    assert list(manifest["targets"]) == list(TARGET_NAMES)
    for name, entry in manifest["targets"].items():
        reqs = (top / entry["requirements"]).read_text()
        pins = [ln for ln in reqs.splitlines() if ln and not ln.startswith("#")]
        assert pins == [f"{n}=={v}" for n, v in TARGET_PINS[name].items()], name
        assert entry["python"] == get_target(name).python and entry["wheels"] == []
    assert LITERT_PINS["ai-edge-litert"].startswith("2.3.")
    assert {"ai-edge-litert", "numpy", "pillow", "flatbuffers"} <= set(LITERT_PINS)
    assert TFLITE_PINS["tflite-runtime"] == "2.14.0" and "numpy" not in TFLITE_PINS
    armhf = manifest["targets"]["bookworm-armhf"]
    assert armhf["system_site_packages"] and "python3-numpy" in armhf["system_packages"]
    # The desktop's answer on the bundled sample, for the device's smoke test.
    assert [m["mode"] for m in manifest["models"]] == ["int8", "float32"]
    for model in manifest["models"]:
        assert (top / model["sample"]).is_file() and model["label"] == f"class_{model['index']}"

    ok = subprocess.run([sys.executable, str(top / "verify.py")], capture_output=True, text=True)
    assert ok.returncode == 0 and "manifest ok" in ok.stdout, ok.stderr


def test_bundle_is_deterministic(deploy_run, tmp_path):
    from edgeship.deploy.pi.bundle import build_bundle

    a = build_bundle(deploy_run, tmp_path / "a" / "b.tar.gz")
    b = build_bundle(deploy_run, tmp_path / "c" / "b.tar.gz")
    assert a.sha256 == b.sha256 and a.size_bytes == b.size_bytes


def test_tampered_bundle_is_refused_before_install(deploy_bundle, tmp_path):
    top = _extract(deploy_bundle, tmp_path)
    model = top / "models" / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    (top / "extra.sh").write_text("echo hi\n")

    proc = subprocess.run([sys.executable, str(top / "verify.py")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "manifest mismatch" in proc.stderr and "models/model_int8.tflite" in proc.stderr
    assert "extra.sh not in the manifest" in proc.stderr

    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["sh", str(top / "install.sh"), "--venv", str(venv)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "manifest mismatch" in proc.stderr
    assert not venv.exists(), "nothing installed from a bundle that does not match"


def test_bundle_missing_model_is_one_line_exit_2(deploy_run, tmp_path):
    out = tmp_path / "b.tar.gz"
    result = runner.invoke(
        app, ["deploy", "bundle", str(deploy_run), "--out", str(out), "--models", "int16x8"]
    )
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "model_int16x8.tflite" in line and "edgeship convert" in line
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bundle_missing_run_folder(tmp_path):
    result = runner.invoke(
        app, ["deploy", "bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "b.tar.gz")]
    )
    assert result.exit_code == 2
    assert "run folder does not exist" in _one_error_line(result)


def test_not_a_tflite_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_int8.tflite").write_bytes(b"not a model at all")
    result = runner.invoke(
        app, ["deploy", "bundle", str(run), "--out", str(tmp_path / "b.tar.gz"), "--models", "int8"]
    )
    assert result.exit_code == 2 and "TFL3" in _one_error_line(result)


def test_bundle_for_one_target(deploy_run, tmp_path):
    out = tmp_path / "armhf.tar.gz"
    result = runner.invoke(
        app,
        ["deploy", "bundle", str(deploy_run), "--out", str(out), "--target", "bookworm-armhf"],
    )
    assert result.exit_code == 0, result.output
    assert "targets bookworm-armhf," in result.stdout
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.load(io.BytesIO(tar.extractfile("armhf/manifest.json").read()))
    assert list(manifest["targets"]) == ["bookworm-armhf"]
    assert [n for n in names if "requirements" in n] == ["armhf/requirements-bookworm-armhf.txt"]


@pytest.mark.parametrize("bad", ["trixie-armhf", "bookworm-arm64,jessie", ","])
def test_bundle_unknown_target_is_one_line_exit_2(deploy_run, tmp_path, bad):
    out = tmp_path / "b.tar.gz"
    result = runner.invoke(
        app, ["deploy", "bundle", str(deploy_run), "--out", str(out), "--target", bad]
    )
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "trixie-arm64, bookworm-arm64, bookworm-armhf" in line and repr(bad) in line
    assert not out.exists()


@pytest.mark.slow
def test_bundle_with_wheels_has_each_targets_wheels(deploy_run, tmp_path):
    """--with-wheels: every wheel each target needs, for its machine and CPython (cached)."""
    out = tmp_path / "offline.tar.gz"
    result = runner.invoke(
        app, ["deploy", "bundle", str(deploy_run), "--out", str(out), "--with-wheels"]
    )
    assert result.exit_code == 0, result.output
    with tarfile.open(out, "r:gz") as tar:
        wheels = [n.split("/", 1)[1] for n in tar.getnames() if n.endswith(".whl")]
        manifest = json.load(io.BytesIO(tar.extractfile("offline/manifest.json").read()))
    assert sorted(wheels) == sorted(manifest["wheels"])
    for name in TARGET_NAMES:
        target = get_target(name)
        mine = [w.split("/")[-1] for w in wheels if w.startswith(f"wheels/{name}/")]
        assert sorted(mine) == sorted(manifest["targets"][name]["wheels"])
        assert len(mine) == len(TARGET_PINS[name]), name
        cp = "cp" + target.python.replace(".", "")
        for wheel in mine:
            python, abi, plat = wheel[:-4].split("-")[-3:]
            assert plat == "any" or plat.endswith(target.wheel_machine), wheel
            assert python in {cp, "py3", "py2.py3"} or abi == "abi3", wheel


def test_bundle_of_a_model_without_metadata(edge_models, tmp_path):
    """Anyone's .tflite (no edgeship metadata, RGB 32x32, uint8 I/O) still bundles."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(edge_models["cnn_uint8"], run / "model_int8.tflite")
    result = runner.invoke(
        app, ["deploy", "bundle", str(run), "--out", str(tmp_path / "c.tar.gz"), "--models", "int8"]
    )
    assert result.exit_code == 0, result.output
    top = _extract(tmp_path / "c.tar.gz", tmp_path / "x")
    (model,) = json.loads((top / "manifest.json").read_text())["models"]
    assert model["sample"] == "samples/synthetic_32x32x3.png"
    assert (top / model["sample"]).is_file()


def _run_with_model_json(deploy_run: Path, dest: Path, **changes) -> Path:
    """deploy_run's models plus the model.json they were converted from, with `changes`."""
    import shutil

    from edge_runtime.metadata.block import read_metadata

    dest.mkdir()
    for model in deploy_run.glob("model_*.tflite"):
        shutil.copyfile(model, dest / model.name)
    meta = read_metadata(dest / "model_int8.tflite")
    meta.pop("quantization")
    meta.update(changes)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


def test_stale_tflite_is_refused(deploy_run, tmp_path):
    """model.json from a newer training than the .tflite files: one line, exit 2, no bundle."""
    fresh = _run_with_model_json(deploy_run, tmp_path / "fresh")
    result = runner.invoke(app, ["deploy", "bundle", str(fresh), "--out", str(tmp_path / "a.tgz")])
    assert result.exit_code == 0, result.output
    with tarfile.open(tmp_path / "a.tgz") as tar:
        assert json.load(tar.extractfile("a/manifest.json"))["model"] == "custom"

    stale = _run_with_model_json(
        deploy_run, tmp_path / "stale", model="cnn", metrics={"test_accuracy": 0.45}
    )
    out = tmp_path / "b.tar.gz"
    result = runner.invoke(app, ["deploy", "bundle", str(stale), "--out", str(out)])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "model_int8.tflite is stale" in line and "another model.keras" in line
    assert f"edgeship convert {stale}/model.keras --out {stale}" in line
    assert not out.exists()


def test_same_source_compares_the_training_identity():
    from edge_runtime.metadata.block import same_source

    run = {
        "model": "mlp",
        "training": {"seed": 0},
        "metrics": {"test_accuracy": 0.8},
        "class_names": ["a", "b"],
        "input": {"shape": [28, 28, 1]},
        "dataset": {"sha256": "x", "source": "/here"},
        "versions": {"python": "3.11"},
    }
    tflite = {
        **run,
        "quantization": {"mode": "int8"},
        "dataset": {"sha256": "x"},
        "versions": {"python": "3.12"},
    }
    assert same_source(run, tflite)
    for key, value in [
        ("model", "cnn"),
        ("training", {"seed": 1}),
        ("class_names", ["a"]),
        ("metrics", {"test_accuracy": 0.7}),
        ("dataset", {"sha256": "y"}),
        ("input", {"shape": [32, 32, 3]}),
    ]:
        assert not same_source(run, {**tflite, key: value}), key


def test_foreign_tflite_beside_a_model_json_is_not_stale(edge_models, tmp_path):
    """A .tflite without edgeship metadata cannot be told stale: it bundles."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(edge_models["cnn_uint8"], run / "model_int8.tflite")
    (run / "model.json").write_text(json.dumps({"model": "cnn", "input": {"shape": [32, 32, 3]}}))
    result = runner.invoke(
        app, ["deploy", "bundle", str(run), "--out", str(tmp_path / "c.tar.gz"), "--models", "int8"]
    )
    assert result.exit_code == 0, result.output


def test_out_is_a_folder_is_one_line_exit_2(deploy_run, tmp_path):
    before = sorted(p.name for p in deploy_run.iterdir())
    result = runner.invoke(app, ["deploy", "bundle", str(deploy_run), "--out", str(deploy_run)])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "--out is a folder" in line and f"out={deploy_run}" in line
    assert sorted(p.name for p in deploy_run.iterdir()) == before, "nothing written"


def test_bundle_stderr_is_only_the_progress_lines(deploy_run, tmp_path):
    """The interpreter's native `INFO: Created ... XNNPACK delegate` line stays off stderr."""
    out = tmp_path / "q.tar.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgeship.cli import main; main()",
            "deploy",
            "bundle",
            str(deploy_run),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "XNNPACK" not in proc.stderr, proc.stderr
    assert all(ln.startswith("bundle: ") for ln in proc.stderr.splitlines()), proc.stderr
