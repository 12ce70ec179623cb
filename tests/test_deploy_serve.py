"""`edgeship deploy push --serve` and `deploy status` against a real sshd on 127.0.0.1.

The "Pi" is this machine, which runs no systemd user manager: the push starts the service as a
background process (edgeship/deploy/pi/service.py says so) with the unit's own command line; the
unit itself is checked in test_serve_systemd.py. A release whose service is unhealthy is rolled
back: `current` goes back and the previous release serves again. `--serve-token-file` puts the
token on the device (mode 0600) and nowhere else; a plain push (no `--serve`) restarts the
installed service on the new release, and rolls back the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edgeship.cli import app
from edgeship.deploy.pi.service import ServeSettings, unit_text
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


def _post_status(port: int, body: bytes, token: str | None = None) -> int:
    """The HTTP status of `POST /v1/predict` (with `Authorization: Bearer token` when given)."""
    headers = {"Content-Type": "image/png"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/predict", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _sample(remote: Path) -> bytes:
    manifest = json.loads((remote / "current" / "manifest.json").read_text())
    return (remote / "current" / manifest["models"][0]["sample"]).read_bytes()


def _unhealthy(bundle: Path, dest: Path) -> Path:
    """The bundle with a service whose /healthz says "broken" (its manifest updated to match,
    so it installs and passes the smoke test: only the health check can catch it)."""
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest / "x", filter="data")
    (top,) = list((dest / "x").iterdir())
    server = top / "edge_runtime/serve/server.py"
    text = server.read_text()
    assert '"status": "ok",' in text
    server.write_text(text.replace('"status": "ok",', '"status": "broken",'))
    manifest = json.loads((top / "manifest.json").read_text())
    manifest["files"]["edge_runtime/serve/server.py"] = hashlib.sha256(
        server.read_bytes()
    ).hexdigest()
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

    status = runner.invoke(
        app, ["deploy", "status", *server.cli_args(), "--remote-dir", str(remote)]
    )
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

    status = runner.invoke(
        app, ["deploy", "status", *server.cli_args(), "--remote-dir", str(remote), "--json"]
    )
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
    result = runner.invoke(
        app, ["deploy", "status", *server.cli_args(), "--remote-dir", str(remote)]
    )
    assert result.exit_code == 2
    assert "service: DOWN" in result.stdout
    assert "the service is down" in _one_error_line(result)


def test_serve_token_file_guards_posts_and_stays_secret(deploy_bundle, device, tmp_path):
    server, remote = device
    port, token = free_port(), "tok-" + secrets.token_hex(12)
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    results = tmp_path / "bench.json"
    pushed = push(
        deploy_bundle,
        server,
        remote,
        "--serve",
        "--serve-port",
        str(port),
        "--serve-token-file",
        str(token_file),
        "--bench",
        "--results",
        str(results),
    )
    assert pushed.exit_code == 0, pushed.output
    assert token not in pushed.output and "warning" not in pushed.stderr
    on_device = remote / "serve.token"
    assert on_device.read_text().strip() == token
    assert stat.S_IMODE(on_device.stat().st_mode) == 0o600

    health = _get(port, "/healthz")
    assert health["token_required"] is True and health["status"] == "ok"
    sample = _sample(remote)
    assert _post_status(port, sample) == 401
    assert _post_status(port, sample, "wrong") == 401
    assert _post_status(port, sample, token) == 200

    # Not on the service's command line (what `ps` shows), not in the settings, the unit or
    # the results: only the file's path is.
    cmdline = Path(f"/proc/{health['pid']}/cmdline").read_bytes().decode().split("\0")
    assert "--token-file" in cmdline and str(on_device) in cmdline
    assert token not in " ".join(cmdline)
    settings_text = (remote / "serve.json").read_text()
    assert token not in settings_text
    settings = ServeSettings.from_json(settings_text)
    assert settings.token is True
    models = json.loads(settings_text)["models"]
    unit = unit_text(str(remote), models, settings)
    assert f'"--token-file" "{on_device}"' in unit and token not in unit
    assert token not in results.read_text()


def test_serve_token_file_is_checked_before_any_host(deploy_bundle, device, tmp_path):
    server, remote = device
    empty = tmp_path / "empty"
    empty.write_text("\n")
    before = _releases(remote)
    result = push(deploy_bundle, server, remote, "--serve", "--serve-token-file", str(empty))
    assert result.exit_code == 2 and "it is empty" in _one_error_line(result)
    result = push(deploy_bundle, server, remote, "--serve-token-file", str(empty))
    assert result.exit_code == 2 and "goes with --serve" in _one_error_line(result)
    assert _releases(remote) == before
    # On the LAN without a token: allowed, with one warning line (this push stops early).
    result = push(tmp_path / "missing.tar.gz", server, remote, "--serve", "--serve-host", "0.0.0.0")
    assert result.exit_code == 2
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "--serve-token-file" in warnings[0], result.stderr


def test_plain_push_restarts_the_installed_service(deploy_bundle, device, tmp_path):
    server, remote = device
    if not (remote / "serve.json").exists() or not (remote / "serve.token").exists():
        pytest.skip("needs the service installed by the token test above")
    settings = ServeSettings.from_json((remote / "serve.json").read_text())
    port, token = settings.port, (remote / "serve.token").read_text().strip()
    old = _get(port, "/healthz")

    pushed = push(deploy_bundle, server, remote)  # no --serve
    assert pushed.exit_code == 0, pushed.output
    assert f"serving on 127.0.0.1:{port} (process" in pushed.stdout
    assert "installed service restarts" in pushed.stderr and "health" in pushed.stderr
    release = _current(remote).rsplit("/", 1)[-1]
    health = _get(port, "/healthz")
    assert Path(health["workdir"]).name == release != Path(old["workdir"]).name
    assert health["pid"] != old["pid"]
    sample = _sample(remote)
    assert _post_status(port, sample) == 401  # the installed token still guards it
    assert _post_status(port, sample, token) == 200
    status = runner.invoke(
        app, ["deploy", "status", *server.cli_args(), "--remote-dir", str(remote)]
    )
    assert status.exit_code == 0, status.output
    assert "not current" not in status.stdout and "token required" in status.stdout

    # A plain push of an unhealthy release rolls back like --serve does.
    pushed = push(_unhealthy(deploy_bundle, tmp_path), server, remote)
    assert pushed.exit_code == 2, pushed.output
    line = _one_error_line(pushed)
    assert "rolled back" in line and f"{release} serves again" in line, line
    assert _current(remote) == f"releases/{release}"
    health = _get(port, "/healthz")
    assert health["status"] == "ok" and Path(health["workdir"]).name == release
    assert health["token_required"] is True


def test_a_stale_pid_file_never_signals_an_unrelated_process(deploy_bundle, device):
    """After a reboot `serve.pid` may name any process of the user: the push must not kill it
    (the no-systemd fallback checks /proc/PID/cmdline first)."""
    server, remote = device
    pid_file = remote / "serve.pid"
    if pid_file.exists():  # the service of the tests above: stopped, as a reboot would
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(300):  # bounded: up to ~30 s for the graceful stop
            if not _alive(pid):
                break
            time.sleep(0.1)
    remote.mkdir(parents=True, exist_ok=True)
    stranger = subprocess.Popen(["sleep", "600"])  # this user's, like the service
    try:
        pid_file.write_text(f"{stranger.pid}\n")
        port = free_port()
        pushed = push(deploy_bundle, server, remote, "--serve", "--serve-port", str(port))
        assert pushed.exit_code == 0, pushed.output
        assert stranger.poll() is None, "the push signalled an unrelated process"
        health = _get(port, "/healthz")
        assert health["pid"] == int(pid_file.read_text()) != stranger.pid
    finally:
        stranger.kill()
        stranger.wait()


def test_a_bundle_with_the_web_app_serves_it_at_app(fashion_runs, device, tmp_path):
    """`deploy bundle --web` then `push --serve`: the service on the device serves the app at
    /app/ (the unit's command line says `--web web`), the same files as the site bundled."""
    from edgeship.deploy.pi.bundle import build_bundle
    from edgeship.deploy.web.site import write_web_site

    server, remote = device
    site = write_web_site(fashion_runs["mlp"], tmp_path / "site", modes=("int8",)).path
    bundle = build_bundle(fashion_runs["mlp"], tmp_path / "web.tar.gz", models="int8", web=site)
    port = free_port()
    pushed = push(bundle.path, server, remote, "--serve", "--serve-port", str(port))
    assert pushed.exit_code == 0, pushed.output
    health = _get(port, "/healthz")
    cmdline = Path(f"/proc/{health['pid']}/cmdline").read_bytes().decode().split("\0")
    assert cmdline[cmdline.index("--web") + 1] == "web"
    for name in ("index.html", "models.json"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/app/{name}", timeout=10) as r:
            assert r.status == 200 and r.read() == (site / name).read_bytes()


def test_push_serve_camera_classifies_the_camera_on_the_device(deploy_bundle, device, tmp_path):
    """`--camera SOURCE` goes into serve.json and the service's command line (the unit's)."""
    import shutil

    from tests.support.camera import ffmpeg_player, jpeg, write_clip

    if shutil.which("ffmpeg") is None:
        pytest.skip("apt-get install ffmpeg")
    import numpy as np

    server, remote = device
    port = free_port()
    clip = write_clip(tmp_path / "clip.mjpeg", [jpeg(np.full((28, 28), 200, np.uint8))], 5)
    camera = "cmd:" + ffmpeg_player(clip, 10, loop=True)
    pushed = push(
        deploy_bundle, server, remote, "--serve", "--serve-port", str(port), "--camera", camera
    )
    assert pushed.exit_code == 0, pushed.output
    assert json.loads((remote / "serve.json").read_text())["camera"] == camera
    deadline = time.monotonic() + 30
    while (health := _get(port, "/healthz"))["camera_frames"]["classified"] == 0:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
    assert health["camera"] == "streaming" and health["camera_source"] == "cmd: " + camera[4:]
    cmdline = Path(f"/proc/{health['pid']}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--camera") + 1].decode() == camera
    settings = ServeSettings(port=port, camera=camera)
    assert '"--camera" "cmd:' in unit_text(str(remote), ["models/m.tflite"], settings)
    # --camera without --serve: refused before any host
    result = push(deploy_bundle, server, remote, "--camera", "auto")
    assert result.exit_code == 2 and "--camera goes with --serve" in _one_error_line(result)
