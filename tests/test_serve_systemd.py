"""The systemd user unit of `deploy push --serve`: `systemd-analyze verify` accepts it, and its
ExecStart line, run as written in its WorkingDirectory, serves /healthz and stops with SIGTERM.

This machine runs no systemd: the unit is checked by systemd's own parser, and its command is
run by hand, on a release laid out as on the device (the unpacked bundle, `venv` a link).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from deploy.service import ServeSettings, unit_text
from tests._sshd import free_port


def _release(bundle: Path, root: Path) -> Path:
    """`root/releases/r1` (the unpacked bundle, `venv` -> this Python's prefix), current."""
    releases = root / "releases"
    releases.mkdir(parents=True)
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(releases / "unpacked", filter="data")
    (top,) = list((releases / "unpacked").iterdir())
    release = top.rename(releases / "r1")
    (release / "venv").symlink_to(sys.prefix)
    (root / "current").symlink_to("releases/r1")
    return release


def _models(release: Path) -> list[str]:
    manifest = json.loads((release / "manifest.json").read_text())
    return [m["file"] for m in manifest["models"]]


def _verify(unit: Path, runtime: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("no systemd-analyze: apt-get install systemd")
    return subprocess.run(
        [exe, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        cwd=unit.parent,
    )


def _directive(text: str, key: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{key}=")]
    return line.split("=", 1)[1]


@pytest.mark.parametrize("token", [False, True])
def test_unit_verifies_and_its_execstart_serves_healthz(deploy_bundle, tmp_path, token):
    root = tmp_path / "edgeship"
    release = _release(deploy_bundle, root)
    settings = ServeSettings(port=free_port(), token=token)
    if token:  # as `push --serve-token-file` leaves it: the unit names the file, not the token
        (root / "serve.token").write_text("unit-s3cret\n")
    text = unit_text(str(root), _models(release), settings)
    assert "unit-s3cret" not in text
    unit = tmp_path / "edgeship.service"
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = _verify(unit, runtime)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    assert _directive(text, "KillSignal") == "SIGTERM"
    assert _directive(text, "WantedBy") == "default.target"

    argv = shlex.split(_directive(text, "ExecStart"))
    workdir = _directive(text, "WorkingDirectory")
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        health, deadline = None, time.monotonic() + 60
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{settings.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    health = json.load(r)
            except OSError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else ""
        assert health["status"] == "ok"
        assert health["models"] == [Path(m).stem for m in _models(release)]
        assert Path(health["workdir"]).name == "r1"  # the release `current` pointed at
        assert health["token_required"] is token
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0  # systemd's stop (KillSignal=SIGTERM) is a clean exit


def test_verify_refuses_a_unit_whose_command_is_missing(deploy_bundle, tmp_path):
    """The check has teeth: the same unit without the release's venv is refused."""
    root = tmp_path / "edgeship"
    release = _release(deploy_bundle, root)
    (release / "venv").unlink()
    unit = tmp_path / "edgeship.service"
    unit.write_text(unit_text(str(root), _models(release), ServeSettings()))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = _verify(unit, runtime)
    assert verified.returncode != 0 and "not executable" in verified.stderr


def test_settings_are_checked():
    with pytest.raises(ValueError, match="--serve-port"):
        ServeSettings(port=0)
    with pytest.raises(ValueError, match="--serve-host"):
        ServeSettings(host="1.2.3.4; rm -rf /")
    assert ServeSettings(host="0.0.0.0").check_host == "127.0.0.1"
