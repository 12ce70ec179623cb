"""`edgeship deploy push --serve` and `deploy status` against a real sshd on 127.0.0.1.

The "Pi" is this machine, which runs no systemd user manager: the push starts the service as a
background process (deploy/service.py says so) with the unit's own command line; the unit
itself is checked in test_serve_systemd.py. A release whose service is unhealthy is rolled
back: `current` goes back and the previous release serves again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from edgeship.cli import app
from tests._sshd import free_port
from tests.test_deploy_push import (  # noqa: F401 - fixtures
    _current,
    _one_error_line,
    _releases,
    _start,
    push,
    runner,
    wheel_env,
)

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def device(tmp_path_factory, wheel_env):  # noqa: F811 - the fixture imported above
    """(sshd, remote dir); the service is stopped by its pid file at the end."""
    server = _start(tmp_path_factory.mktemp("sshd_serve"), wheel_env)
    remote = tmp_path_factory.mktemp("device_serve") / "edgeship"
    yield server, remote
    pid_file = remote / "serve.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    server.stop()


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie nobody reaped: sshd's children are not ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _get(port: int, path: str, data: bytes | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def _unhealthy(bundle: Path, dest: Path) -> Path:
    """The bundle with a service whose /healthz says "broken" (its manifest updated to match,
    so it installs and passes the smoke test: only the health check can catch it)."""
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest / "x", filter="data")
    (top,) = list((dest / "x").iterdir())
    server = top / "edge_runtime" / "server.py"
    text = server.read_text()
    assert '"status": "ok",' in text
    server.write_text(text.replace('"status": "ok",', '"status": "broken",'))
    manifest = json.loads((top / "manifest.json").read_text())
    manifest["files"]["edge_runtime/server.py"] = hashlib.sha256(server.read_bytes()).hexdigest()
    (top / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    out = dest / "unhealthy.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return out


def test_push_serve_status_and_rollback(deploy_bundle, device, tmp_path):
    server, remote = device
    port = free_port()
    first = push(deploy_bundle, server, remote, "--serve", "--serve-port", str(port))
    assert first.exit_code == 0, first.output
    assert f"serving on 127.0.0.1:{port} (process" in first.stdout
    for step in ("switch", "serve", "health", "done"):
        assert step in first.stderr, step
    (release,) = _releases(remote)
    assert _current(remote) == f"releases/{release}"
    health = _get(port, "/healthz")
    assert health["status"] == "ok" and Path(health["workdir"]).name == release
    first_pid = health["pid"]
    # The service answers what the desktop answered for the bundle's sample.
    manifest = json.loads((remote / "current" / "manifest.json").read_text())
    model = manifest["models"][0]
    sample = (remote / "current" / model["sample"]).read_bytes()
    got = _get(port, f"/v1/predict?model={Path(model['file']).stem}", sample)
    assert got["index"] == model["index"]

    status = runner.invoke(app, ["deploy", "status", *server.cli_args(),
                                 "--remote-dir", str(remote)])
    assert status.exit_code == 0, status.output
    assert f"current -> releases/{release}" in status.stdout
    assert f"service: ok on 127.0.0.1:{port}" in status.stdout
    assert "predictions: 1 " in status.stdout and "errors: none" in status.stdout

    # A new release whose service is unhealthy: rolled back, the previous one serves again.
    broken = _unhealthy(deploy_bundle, tmp_path)
    second = push(broken, server, remote, "--serve", "--serve-port", str(port))
    assert second.exit_code == 2, second.output
    line = _one_error_line(second)
    assert "rolled back" in line and f"{release} serves again" in line, line
    assert "rollback" in second.stderr
    assert _current(remote) == f"releases/{release}"
    assert _releases(remote) == [release]  # the failed release is gone
    health = _get(port, "/healthz")
    assert health["status"] == "ok" and Path(health["workdir"]).name == release
    assert health["pid"] != first_pid  # restarted on the previous release

    status = runner.invoke(app, ["deploy", "status", *server.cli_args(),
                                 "--remote-dir", str(remote), "--json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout.splitlines()[-1])
    assert data["health"]["status"] == "ok" and data["settings"]["port"] == port


def test_status_of_a_stopped_service_fails(deploy_bundle, device):
    server, remote = device
    if not (remote / "serve.pid").exists():
        pytest.skip("needs the service of the test above")
    pid = int((remote / "serve.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):  # bounded: up to ~20 s for the graceful stop
        if not _alive(pid):
            break
        time.sleep(0.1)
    result = runner.invoke(app, ["deploy", "status", *server.cli_args(),
                                 "--remote-dir", str(remote)])
    assert result.exit_code == 2
    assert "service: DOWN" in result.stdout
    assert "the service is down" in _one_error_line(result)
