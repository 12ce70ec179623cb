"""Deploy targets: which machine is which target, and refusals before anything is uploaded.

The detection (`edge_runtime/device/targets.py`) is a pure function of a machine's facts; the
refusals run for real: a loopback sshd whose `python3` is this machine's, or the emulated
32-bit Trixie Python (Debian trixie armhf, CPython 3.13, under qemu-arm 10), and install.sh
run by hand on an unpacked bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_runtime.device.targets import match
from edgeship.cli import app
from tests._sshd import Sshd, SshdUnavailable

runner = CliRunner()
TARGETS_PY = Path(__file__).resolve().parents[1] / "edge_runtime/device/targets.py"


def facts(machine, bits, python, codename="bookworm", **extra):
    return {
        "machine": machine,
        "bits": bits,
        "python": python,
        "os_codename": codename,
        "os_name": f"Debian ({codename})",
        **extra,
    }


@pytest.mark.parametrize(
    ("machine", "bits", "python", "codename", "want"),
    [
        ("aarch64", 64, "3.13.5", "trixie", "trixie-arm64"),
        ("aarch64", 64, "3.11.2", "bookworm", "bookworm-arm64"),
        ("armv7l", 32, "3.11.2", "bookworm", "bookworm-armhf"),
        # 32-bit Raspberry Pi OS on a Pi 4/5 boots a 64-bit kernel: uname says aarch64
        ("aarch64", 32, "3.11.2", "bookworm", "bookworm-armhf"),
        ("x86_64", 64, "3.11.2", "bookworm", "bookworm-arm64"),  # same pins, x86_64 wheels
    ],
)
def test_supported_machines_get_their_target(machine, bits, python, codename, want):
    target, _note = match(facts(machine, bits, python, codename))
    assert target is not None and target.name == want


@pytest.mark.parametrize(
    ("machine", "bits", "python", "codename", "says"),
    [
        ("armv7l", 32, "3.13.5", "trixie", "flash Raspberry Pi OS (64-bit)"),
        ("armv6l", 32, "3.11.2", "bookworm", "Raspberry Pi Zero / 1"),
        ("aarch64", 64, "3.12.3", "noble", "No target for Python 3.12"),
        ("i686", 32, "3.11.2", "bookworm", "No TFLite Python runtime for this machine"),
        ("riscv64", 64, "3.13.5", "trixie", "No TFLite Python runtime for this machine"),
    ],
)
def test_unsupported_machines_are_refused_with_the_fix(machine, bits, python, codename, says):
    target, why = match(facts(machine, bits, python, codename))
    assert target is None and says in why
    assert "Supported: trixie-arm64" in why and "bookworm-armhf" in why and "\n" not in why


def test_pypy_is_refused():
    target, why = match(facts("aarch64", 64, "3.11.9", python_implementation="PyPy"))
    assert target is None and "Only CPython" in why


def test_probe_reads_the_fake_root(tmp_path):
    """`targets.py --json --root DIR`: the OS and board come from DIR, the rest from Python."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_CODENAME=trixie\n'
    )
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    proc = subprocess.run(
        [sys.executable, str(TARGETS_PY), "--json", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["facts"]["board"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert record["facts"]["os_codename"] == "trixie"
    assert record["facts"]["python"] == ".".join(map(str, sys.version_info[:3]))


# --- refusals for real: a loopback sshd, install.sh by hand ------------------------------


def _unpack(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def host_target() -> str:
    """This machine's target, as its system python3 (the loopback "Pi"'s) detects it."""
    proc = subprocess.run(
        ["python3", str(TARGETS_PY), "--json"],
        capture_output=True,
        text=True,
        env={"PATH": SYSTEM_PATH},
    )
    target = json.loads(proc.stdout)["target"] if proc.returncode == 0 else None
    if target is None:
        pytest.skip(f"this host is no deploy target: {proc.stdout or proc.stderr}")
    return target


@pytest.fixture(scope="module")
def other_target(host_target) -> str:
    return "trixie-arm64" if host_target != "trixie-arm64" else "bookworm-arm64"


@pytest.fixture(scope="module")
def foreign_bundle(deploy_run, tmp_path_factory, other_target) -> Path:
    """A bundle built only for a 64-bit target that this machine is not."""
    from edgeship.deploy.pi.bundle import build_bundle

    out = tmp_path_factory.mktemp("foreign") / "foreign.tar.gz"
    return build_bundle(deploy_run, out, targets=other_target).path


@pytest.fixture(scope="module")
def trixie_armhf_python(tmp_path_factory) -> Path:
    """An executable `python3` that is Debian trixie's armhf CPython 3.13 under qemu-arm 10."""
    from tests.support import EnvironmentUnavailable
    from tests.support.pi import ensure_pi_python

    try:
        py = ensure_pi_python("trixie-armhf")
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated trixie armhf Python unavailable: {exc}")
    wrapper = tmp_path_factory.mktemp("armhf") / "python3"
    argv = " ".join(f"'{a}'" for a in py.command([]))
    wrapper.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _sshd(root: Path, setenv: dict[str, str]) -> Sshd:
    try:
        return Sshd(root, setenv=setenv).start()
    except SshdUnavailable as exc:
        pytest.skip(f"no sshd: {exc}")


def _push(bundle: Path, server: Sshd, remote: Path, *extra: str):
    args = ["deploy", "push", str(bundle), *server.cli_args(), "--remote-dir", str(remote)]
    return runner.invoke(app, [*args, *extra])


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.ssh
def test_push_refuses_a_host_the_bundle_was_not_built_for(
    foreign_bundle, host_target, other_target, tmp_path
):
    """This machine (e.g. Debian 12, python3 3.11: bookworm-arm64) and a bundle for another."""
    server = _sshd(tmp_path / "sshd", {})
    try:
        remote = tmp_path / "device" / "edgeship"
        result = _push(foreign_bundle, server, remote)
        assert result.exit_code == 2
        line = _one_error_line(result)
        assert f"built for {other_target}" in line and f"--target {host_target}" in line
        assert " probe " in result.stderr and " upload " not in result.stderr
        assert not remote.exists(), "nothing uploaded"
        # --target overrides the probe, but still only among the bundle's targets
        result = _push(foreign_bundle, server, remote, "--target", "bookworm-armhf")
        assert result.exit_code == 2 and f"built for {other_target}" in _one_error_line(result)
        assert not remote.exists()
    finally:
        server.stop()


@pytest.mark.ssh
@pytest.mark.emulated
def test_push_refuses_32_bit_trixie_before_upload(deploy_bundle, trixie_armhf_python, tmp_path):
    """The host's python3 is a real 32-bit Trixie CPython 3.13 (emulated): refused, one line."""
    server = _sshd(tmp_path / "sshd", {"PYTHON": str(trixie_armhf_python)})
    try:
        remote = tmp_path / "device" / "edgeship"
        result = _push(deploy_bundle, server, remote)
        assert result.exit_code == 2
        line = _one_error_line(result)
        assert "unsupported device, nothing uploaded" in line
        assert "armv7l 32-bit userland, Python 3.13" in line and "trixie" in line
        assert "flash Raspberry Pi OS (64-bit)" in line
        assert " upload " not in result.stderr and not remote.exists()
    finally:
        server.stop()


@pytest.mark.emulated
def test_install_sh_refuses_32_bit_trixie(deploy_bundle, trixie_armhf_python, tmp_path):
    top = _unpack(deploy_bundle, tmp_path)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": str(trixie_armhf_python)}
    proc = subprocess.run(["./install.sh"], cwd=top, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Unsupported device" in errors[0], proc.stderr
    assert "Python 3.13" in errors[0] and "bookworm-armhf" in errors[0]
    assert not (top / "venv").exists()


def test_install_sh_refuses_a_device_the_bundle_was_not_built_for(foreign_bundle, tmp_path):
    top = _unpack(foreign_bundle, tmp_path)
    env = {"PATH": SYSTEM_PATH, "HOME": str(tmp_path)}
    proc = subprocess.run(["./install.sh"], cwd=top, env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "not built for" in errors[0], proc.stderr
    assert not (top / "venv").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "bogus"], "Unknown target. Choose from trixie-arm64"),
        (["--target", "bookworm-armhf"], "--target bookworm-armhf is not in the bundle"),
        (["--bench", "--threads", "0,abc"], "--threads takes counts >= 1"),
        (["--threads", "1,2"], "--threads goes with --bench"),
        (["--serve-port", "8081"], "--serve-port goes with --serve"),
        (["--serve-host", "0.0.0.0"], "--serve-host goes with --serve"),
        (["--serve", "--serve-port", "70000"], "--serve-port must be in 1..65535"),
    ],
)
def test_push_option_errors_before_any_host_is_contacted(deploy_run, tmp_path, args, fragment):
    """Bad push options are one line, exit 2, and no `connect` step (port 1 never answers)."""
    from tests.support.procs import one_error_line

    bundle = tmp_path / "arm64.tar.gz"
    result = runner.invoke(
        app, ["deploy", "bundle", str(deploy_run), "--out", str(bundle), "--target",
              "trixie-arm64,bookworm-arm64"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    argv = ["deploy", "push", bundle, "--host", "pi@127.0.0.1", "--port", "1", *args]
    line = one_error_line("edgeship", argv)
    assert line.startswith("error: ") and fragment in line, line
