"""`deploy push --keep N` and a multi-host push whose device text holds Rich markup, against
real sshd servers on 127.0.0.1 (the fixtures of test_deploy_push.py).

Each test pushes into its own remote folder (the module's venvs linked in, so nothing is
reinstalled): the result never depends on which tests ran before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeship.cli import app
from tests.test_deploy_push import (  # noqa: F401 - fixtures
    _current,
    _releases,
    _start,
    first_push,
    push,
    remote,
    runner,
    sshd,
    wheel_env,
)

pytestmark = pytest.mark.ssh

# A release name (the pattern edgeship/deploy/pi/push.py prunes) that sorts after any real one.
FUTURE = "29991231T235959999Z-00000000-0000"


def _fresh(first_push, remote: Path, dest: Path) -> Path:  # noqa: F811
    """An empty remote folder that shares the module's venvs (installed by `first_push`)."""
    assert first_push.exit_code == 0, first_push.output
    fresh = dest / "edgeship"
    fresh.mkdir(parents=True)
    (fresh / "venvs").symlink_to(remote / "venvs")
    return fresh


def _push_ok(bundle: Path, server, remote_dir: Path, *extra: str) -> str:
    result = push(bundle, server, remote_dir, *extra)
    assert result.exit_code == 0, result.output
    return _current(remote_dir).removeprefix("releases/")


def test_keep_n_keeps_the_newest_n_and_never_current(
    first_push,  # noqa: F811
    deploy_bundle,
    sshd,  # noqa: F811
    remote,  # noqa: F811
    tmp_path,  # noqa: F811
):
    d = _fresh(first_push, remote, tmp_path)
    made = [_push_ok(deploy_bundle, sshd, d, "--keep", "2") for _ in range(3)]
    assert len(set(made)) == 3
    assert _releases(d) == sorted(made[1:]), "--keep 2 after 3 pushes: the last two"
    assert _current(d) == f"releases/{made[2]}"

    made.append(_push_ok(deploy_bundle, sshd, d, "--keep", "0"))
    assert _releases(d) == sorted(made[1:]), "--keep 0 removes nothing"

    # A release that sorts after the new one (a clock set wrong once): --keep 1 keeps it,
    # and must still keep `current`, the release just pushed; the three before it go.
    (d / "releases" / FUTURE).mkdir()
    made.append(_push_ok(deploy_bundle, sshd, d, "--keep", "1"))
    assert _releases(d) == sorted([FUTURE, made[4]])
    assert _current(d) == f"releases/{made[4]}"


def test_a_prune_failure_is_a_warning_not_a_failure(
    first_push,  # noqa: F811
    deploy_bundle,
    sshd,  # noqa: F811
    remote,  # noqa: F811
    tmp_path,  # noqa: F811
):
    d = _fresh(first_push, remote, tmp_path)
    old = _push_ok(deploy_bundle, sshd, d)
    busy = d / "releases" / old / "busy"
    busy.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(busy)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:  # `rm -rf` of the old release fails (a mount point in it: EBUSY)
        result = push(deploy_bundle, sshd, d, "--keep", "1")
        assert result.exit_code == 0, result.output
        new = _current(d).removeprefix("releases/")
        assert _releases(d) == sorted([old, new])
        warnings = [ln for ln in result.stderr.splitlines() if " warning " in ln]
        assert len(warnings) == 1, result.stderr
        assert "--keep 1" in warnings[0] and "busy" in warnings[0], warnings
    finally:
        subprocess.run(["umount", "-l", str(busy)], check=False)


def test_rich_markup_in_a_devices_text_does_not_abort_a_multi_host_push(
    first_push,  # noqa: F811
    deploy_bundle,
    sshd,  # noqa: F811
    remote,  # noqa: F811
    tmp_path_factory,
    wheel_env,  # noqa: F811
    tmp_path,  # noqa: F811
):
    """A second "Pi" whose python3 path holds `[/x]`: its probe fails with that text in the
    error; the push prints it literally, the first host is deployed and reported."""
    odd = "/no/such[/x]/python3"
    root = tmp_path_factory.mktemp("sshd_markup")
    for name in ("client_key", "client_key.pub"):
        shutil.copy(sshd.root / name, root / name)
    bad = _start(root, {**wheel_env, "PYTHON": odd})
    try:
        d = _fresh(first_push, remote, tmp_path)
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts.read_text() + bad.known_hosts.read_text())
        result = runner.invoke(
            app,
            [
                "deploy",
                "push",
                str(deploy_bundle),
                "--host",
                f"{sshd.target}:{sshd.port}",
                "--host",
                f"{bad.target}:{bad.port}",
                "--identity",
                str(sshd.client_key),
                "--known-hosts",
                str(known),
                "--remote-dir",
                str(d),
            ],
        )
    finally:
        bad.stop()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, result.output
    oks = [ln for ln in result.stdout.splitlines() if ln.startswith("ok ")]
    assert len(oks) == 1 and f":{sshd.port}:" in oks[0], result.stdout
    failed = [ln for ln in result.stderr.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1 and odd in failed[0] and f":{bad.port}" in failed[0], result.stderr
    assert "1 of 2 hosts" in result.stderr
    assert len(_releases(d)) == 1


STEP_LINE = re.compile(r"^(\S+) +(\w+) ")


def test_the_steps_come_in_order_one_line_each(first_push):  # noqa: F811
    """The progress lines of the first push (`HOST STEP detail`), in the documented order."""
    assert first_push.exit_code == 0, first_push.output
    steps = []
    for line in first_push.stderr.splitlines():
        m = STEP_LINE.match(line)
        if m and (not steps or steps[-1] != m.group(2)):
            steps.append(m.group(2))
    assert steps == [
        "connect",
        "probe",
        "upload",
        "verify",
        "install",
        "smoke",
        "doctor",
        "bench",
        "switch",
        "done",
    ], first_push.stderr


def test_connect_timeout_reaches_ssh(deploy_bundle, sshd, tmp_path, monkeypatch):  # noqa: F811
    """`--connect-timeout 2` against a port that accepts TCP but never speaks SSH: the real
    ssh (behind a wrapper that logs its argv) gets `ConnectTimeout=2` and the push fails
    with one line, without waiting for ssh's default."""
    import socket

    log = tmp_path / "ssh-argv.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("ssh")
    assert real, "no ssh client"
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        result = runner.invoke(
            app,
            [
                "deploy",
                "push",
                str(deploy_bundle),
                "--host",
                f"{sshd.user}@127.0.0.1:{port}",
                "--identity",
                str(sshd.client_key),
                "--known-hosts",
                str(sshd.known_hosts),
                "--remote-dir",
                str(tmp_path / "r"),
                "--connect-timeout",
                "2",
            ],
        )
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "timed out" in errors[0], result.stderr
    assert "ConnectTimeout=2" in log.read_text().split(), log.read_text()
    assert not (tmp_path / "r").exists()
