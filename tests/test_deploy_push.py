"""edgeship deploy push against real OpenSSH servers on 127.0.0.1 (the "Pi" is this machine).

Each sshd runs with throwaway host and client keys in a temp folder. Its sessions get
`PIP_FIND_LINKS` + `PIP_NO_INDEX` (sshd `SetEnv`) pointing at the pinned wheels for this
machine, downloaded once into the edgeship cache, so install.sh is fast and offline-safe.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_runtime.device.targets import TARGETS
from edgeship.cli import app
from edgeship.deploy.pi.requirements import LITERT_PINS
from tests._sshd import Sshd, SshdUnavailable, free_port, keygen

pytestmark = pytest.mark.ssh
runner = CliRunner()


# --- fixtures --------------------------------------------------------------------------------


def _remote_python_version() -> str:
    """The version of `python3` on sshd's default PATH (what install.sh will use)."""
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    exe = shutil.which("python3", path=path)
    if exe is None:
        pytest.skip("no python3 on sshd's PATH")
    out = subprocess.run(
        [exe, "-c", "import ensurepip, sys, venv; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(f"{exe} cannot make venvs: apt-get install python3-venv ({out.stderr[-200:]})")
    return out.stdout.strip()


def host_target() -> str:
    """The target this machine installs as the loopback "Pi" (its python3's version)."""
    version = _remote_python_version()
    for target in TARGETS:
        if target.bits == 64 and target.python == version:
            return target.name
    pytest.skip(f"no deploy target for this host's python3 {version}")


@pytest.fixture(scope="module")
def wheel_env() -> dict[str, str]:
    """pip settings for the remote sessions: the pinned wheels for this machine, cached."""
    from edgeship.deploy.pi.wheels import download_wheels

    wheels = download_wheels(host_target(), platform.machine(), _remote_python_version())
    return {"PIP_FIND_LINKS": str(wheels[0].parent), "PIP_NO_INDEX": "1"}


def _start(root: Path, wheel_env: dict[str, str]) -> Sshd:
    try:
        return Sshd(root, setenv=wheel_env).start()
    except SshdUnavailable as exc:
        pytest.skip(f"no sshd: {exc}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory, wheel_env):
    server = _start(tmp_path_factory.mktemp("sshd"), wheel_env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd2(tmp_path_factory, wheel_env, sshd):
    """A second server (another "Pi") that trusts the same client key."""
    root = tmp_path_factory.mktemp("sshd2")
    for name in ("client_key", "client_key.pub"):
        shutil.copy(sshd.root / name, root / name)
    server = _start(root, wheel_env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Path:
    """The remote dir the main tests deploy to (one venv for the module)."""
    return tmp_path_factory.mktemp("device") / "edgeship"


def push(bundle: Path, server: Sshd, remote_dir: Path, *extra: str):
    args = ["deploy", "push", str(bundle), *server.cli_args(), "--remote-dir", str(remote_dir)]
    return runner.invoke(app, [*args, *extra])


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _current(remote_dir: Path) -> str:
    return os.readlink(remote_dir / "current")


def _releases(remote_dir: Path) -> list[str]:
    return sorted(p.name for p in (remote_dir / "releases").iterdir())


def _predict_on_device(remote_dir: Path) -> dict:
    """What `current` answers now: `venv/bin/python -m edge_runtime predict --json`."""
    cur = remote_dir / "current"
    manifest = json.loads((cur / "manifest.json").read_text())
    model = manifest["models"][0]
    proc = subprocess.run(
        [
            str(cur / "venv" / "bin" / "python"),
            "-m",
            "edge_runtime",
            "predict",
            "--json",
            model["file"],
            model["sample"],
        ],
        cwd=cur,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["index"] == model["index"], (got, model)
    return got


@pytest.fixture(scope="module")
def first_push(deploy_bundle, sshd, remote):
    result = push(
        deploy_bundle, sshd, remote, "--bench", "--results", str(remote.parent / "bench.json")
    )
    return result


def _tampered(bundle: Path, dest: Path) -> Path:
    """The bundle with one model byte flipped and its manifest left as it was."""
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest / "x", filter="data")
    (top,) = list((dest / "x").iterdir())
    model = top / "models" / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x55
    model.write_bytes(bytes(data))
    out = dest / "tampered.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return out


# --- the happy path ---------------------------------------------------------------------------


def test_first_push_installs_smoke_tests_and_switches(first_push, remote):
    assert first_push.exit_code == 0, first_push.output
    assert "venv installed" in first_push.stdout
    (release,) = _releases(remote)
    assert _current(remote) == f"releases/{release}"
    assert (remote / "current" / "venv").is_symlink()
    assert f": {host_target()}, release" in first_push.stdout
    steps = ("probe", "upload", "verify", "install", "smoke", "doctor", "switch", "bench", "done")
    for step in steps:
        assert step in first_push.stderr, step
    _predict_on_device(remote)


def test_bench_round_trip(first_push, remote):
    assert first_push.exit_code == 0, first_push.output
    data = json.loads((remote.parent / "bench.json").read_text())
    assert data["target"] == host_target(), "the probed target is recorded"
    assert data["device"]["machine"] == platform.machine() and data["device"]["bits"] == 64
    checks = {c["name"]: c for c in data["doctor"]["checks"]}
    assert data["doctor"]["device"]["target"] == host_target()
    assert checks["runtime"]["status"] == "ok" and "ai_edge_litert" in checks["runtime"]["detail"]
    assert checks["xnnpack"]["status"] == "ok", checks["xnnpack"]
    assert data["host"].endswith(f"@127.0.0.1:{data['host'].rsplit(':', 1)[1]}")
    assert [m["mode"] for m in data["models"]] == ["int8", "float32"]
    for entry in data["models"]:
        for key in (
            "load_ms",
            "latency_us",
            "throughput_ips",
            "peak_rss_mb",
            "backend",
            "backend_version",
            "machine",
            "python",
            "runs",
        ):
            assert key in entry, key
        assert entry["latency_us"]["p50"] > 0 and entry["backend"] == "ai_edge_litert"
        assert entry["backend_version"] == LITERT_PINS["ai-edge-litert"]


def test_second_push_reuses_the_venv(first_push, deploy_bundle, sshd, remote):
    assert first_push.exit_code == 0, first_push.output
    venv = (remote / "current" / "venv").resolve()
    stamp = venv / ".edgeship-requirements"
    before = (stamp.stat().st_ino, stamp.stat().st_mtime_ns, (venv / "bin" / "python").lstat())
    old = _current(remote)

    result = push(deploy_bundle, sshd, remote)
    assert result.exit_code == 0, result.output
    assert "venv reused" in result.stdout
    assert _current(remote) != old and len(_releases(remote)) == 2
    assert (remote / "current" / "venv").resolve() == venv
    after = (stamp.stat().st_ino, stamp.stat().st_mtime_ns, (venv / "bin" / "python").lstat())
    assert after == before, "the venv was not rebuilt"
    _predict_on_device(remote)


def test_bench_each_thread_count(first_push, deploy_bundle, sshd, remote, tmp_path):
    """`push --bench --threads 1,2`: one result per model and thread count, with the state."""
    assert first_push.exit_code == 0, first_push.output
    out = tmp_path / "threads.json"
    result = push(deploy_bundle, sshd, remote, "--bench", "--threads", "1,2", "--results", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    got = [(m["mode"], m["threads"]) for m in data["models"]]
    assert got == [("int8", 1), ("int8", 2), ("float32", 1), ("float32", 2)]
    for m in data["models"]:
        assert "device_before" in m and "throttled" in m and m["latency_us"]["p50"] > 0


def test_parallel_push_to_two_hosts(deploy_bundle, sshd, sshd2, remote, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text() + sshd2.known_hosts.read_text())
    results = tmp_path / "device.json"
    result = runner.invoke(
        app,
        [
            "deploy",
            "push",
            str(deploy_bundle),
            "--host",
            f"{sshd.target}:{sshd.port}",
            "--host",
            f"{sshd2.target}:{sshd2.port}",
            "--identity",
            str(sshd.client_key),
            "--known-hosts",
            str(known),
            "--remote-dir",
            str(remote),
            "--bench",
            "--results",
            str(results),
        ],
    )
    assert result.exit_code == 0, result.output
    oks = [ln for ln in result.stdout.splitlines() if ln.startswith("ok ")]
    assert len(oks) == 2 and f":{sshd.port}:" in oks[0] and f":{sshd2.port}:" in oks[1]
    assert len(_releases(remote)) <= 3, "--keep 3: older releases pruned"
    for server in (sshd, sshd2):
        out = tmp_path / f"device-{sshd.user}_127.0.0.1_{server.port}.json"
        assert json.loads(out.read_text())["host"] == f"{server.target}:{server.port}"
    _predict_on_device(remote)


def test_one_failing_host_fails_the_push_but_not_the_other(deploy_bundle, sshd, remote):
    closed = free_port()
    result = runner.invoke(
        app,
        [
            "deploy",
            "push",
            str(deploy_bundle),
            "--host",
            f"{sshd.target}:{sshd.port}",
            "--host",
            f"{sshd.target}:{closed}",
            "--identity",
            str(sshd.client_key),
            "--known-hosts",
            str(sshd.known_hosts),
            "--remote-dir",
            str(remote),
        ],
    )
    assert result.exit_code == 2
    assert [ln for ln in result.stdout.splitlines() if ln.startswith("ok ")]
    assert "1 of 2 hosts" in _one_error_line(result) and "unreachable" in result.stderr


# --- faults: one line, exit 2, the previous release intact ----------------------------------


def _assert_untouched(remote: Path, current: str, releases: list[str]) -> None:
    assert _current(remote) == current
    assert _releases(remote) == releases, "the failed release was removed"
    _predict_on_device(remote)


def test_manifest_mismatch_is_refused_on_the_device(
    first_push, deploy_bundle, sshd, remote, tmp_path
):
    assert first_push.exit_code == 0, first_push.output
    current, releases = _current(remote), _releases(remote)
    result = push(_tampered(deploy_bundle, tmp_path), sshd, remote)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "manifest mismatch" in line and "models/model_int8.tflite" in line
    _assert_untouched(remote, current, releases)


def test_wrong_key_is_refused(deploy_bundle, sshd, remote, tmp_path):
    key = keygen(tmp_path / "stranger")
    args = [
        "deploy",
        "push",
        str(deploy_bundle),
        "--host",
        sshd.target,
        "--port",
        str(sshd.port),
        "--identity",
        str(key),
        "--known-hosts",
        str(sshd.known_hosts),
        "--remote-dir",
        str(remote),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "authentication refused" in _one_error_line(result)


def test_closed_port_is_unreachable(deploy_bundle, sshd, tmp_path):
    args = [
        "deploy",
        "push",
        str(deploy_bundle),
        "--host",
        sshd.target,
        "--port",
        str(free_port()),
        "--identity",
        str(sshd.client_key),
        "--known-hosts",
        str(sshd.known_hosts),
        "--remote-dir",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "unreachable" in line and "Connection refused" in line
    assert not (tmp_path / "r").exists()


def test_unknown_host_key_is_refused_not_added(deploy_bundle, sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    args = [
        "deploy",
        "push",
        str(deploy_bundle),
        "--host",
        sshd.target,
        "--port",
        str(sshd.port),
        "--identity",
        str(sshd.client_key),
        "--known-hosts",
        str(known),
        "--remote-dir",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "unknown host key" in line and "ssh-keyscan" in line
    assert known.read_text() == "", "never added silently"
    assert not (tmp_path / "r").exists()


CUT_PROXY = r"""
import os, socket, sys, threading
host, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.create_connection((host, port))
def down():
    while data := sock.recv(65536):
        os.write(1, data)
    os._exit(0)
threading.Thread(target=down, daemon=True).start()
sent = 0
while data := os.read(0, 65536):
    sock.sendall(data[: max(0, limit - sent)])
    sent += len(data)
    if sent >= limit:
        os._exit(0)  # the network drops mid-transfer
"""


def test_transfer_cut_off(first_push, deploy_bundle, sshd, remote, tmp_path):
    """A connection that drops during the upload (ProxyCommand that stops after 30 kB)."""
    assert first_push.exit_code == 0, first_push.output
    current, releases = _current(remote), _releases(remote)
    proxy = tmp_path / "cut.py"
    proxy.write_text(CUT_PROXY)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  ProxyCommand {sys.executable} {proxy} %h %p 30000\n")
    assert deploy_bundle.stat().st_size > 60_000
    result = push(deploy_bundle, sshd, remote, "--ssh-config", str(config))
    assert result.exit_code == 2
    assert "upload was cut off" in _one_error_line(result)
    _assert_untouched(remote, current, releases)
    assert not [p for p in (remote / "releases").iterdir() if p.name.startswith(".")]


def test_remote_disk_full(first_push, deploy_bundle, sshd, remote, tmp_path):
    """The device's disk fills up during the upload: a small tmpfs holds the releases."""
    assert first_push.exit_code == 0, first_push.output
    small = tmp_path / "small" / "edgeship"
    (small / "releases").mkdir(parents=True)
    (small / "venvs").symlink_to(remote / "venvs")  # the venv is reused, not reinstalled
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small / "releases")],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        first = push(deploy_bundle, sshd, small)
        assert first.exit_code == 0, first.output
        current, releases = _current(small), _releases(small)
        free = shutil.disk_usage(small / "releases").free
        with open(small / "releases" / "filler", "wb") as fill:  # leave 64 kB free
            fill.write(b"\0" * max(0, free - 64 * 1024))
        result = push(deploy_bundle, sshd, small)
        assert result.exit_code == 2
        assert "ran out of disk space" in _one_error_line(result)
        (small / "releases" / "filler").unlink()
        _assert_untouched(small, current, [*releases])
    finally:
        subprocess.run(["umount", "-l", str(small / "releases")], check=False)


def test_install_sh_by_hand_reuses_its_venv(deploy_bundle, wheel_env, tmp_path):
    """On the Pi without edgeship: `tar -xzf` + `./install.sh` (./venv), twice."""
    with tarfile.open(deploy_bundle, "r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (top,) = list(tmp_path.iterdir())
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **wheel_env}
    first = subprocess.run(["./install.sh"], cwd=top, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "creating venv" in first.stdout and (top / "venv" / "bin" / "python").exists()
    second = subprocess.run(["./install.sh"], cwd=top, env=env, capture_output=True, text=True)
    assert second.returncode == 0 and "reusing venv" in second.stdout, second.stderr
    # verify.py ignores what install.sh made (venv/, __pycache__/)
    check = subprocess.run(
        ["python3", "verify.py"], cwd=top, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def test_failed_bench_is_a_failed_deploy_before_the_switch(
    first_push, deploy_bundle, sshd, remote, tmp_path
):
    """--bench runs in the new release before `current` moves: a failure leaves it as it was."""
    assert first_push.exit_code == 0, first_push.output
    current, releases = _current(remote), _releases(remote)
    results = tmp_path / "results-is-a-folder"
    results.mkdir()
    result = push(deploy_bundle, sshd, remote, "--bench", "--results", str(results))
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "cannot write the bench results" in line and f"path={results}" in line
    assert "`current` was not switched" in line
    assert not [ln for ln in result.stdout.splitlines() if ln.startswith("ok ")]
    stderr = result.stderr
    assert stderr.index(" bench ") < stderr.index("error:") and " switch " not in stderr
    _assert_untouched(remote, current, releases)
