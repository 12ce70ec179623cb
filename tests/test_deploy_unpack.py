"""`release.py prepare` checks every member of a bundle itself, whatever the Python: under
the emulated Raspberry Pi OS Bookworm CPython 3.11.2 (no tarfile data filter) and the host's,
a crafted bundle is one `error:` line, nothing is written, `current` is kept."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

RELEASE_PY = (
    Path(__file__).resolve().parents[1] / "edgeship" / "deploy" / "pi" / "remote" / "release.py"
)
RELEASE = "20260101T000000000Z-abcdef12-0001"


def _file(name: str, mode: int = 0o644, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    return info, None


CRAFTED = {
    "dotdot": [_file("TOP/../../x")],
    "absolute": [_file("TOP/ok"), _file("/abs/x")],
    "through_symlink": [_special("TOP/up", tarfile.SYMTYPE, "../../.."), _file("TOP/up/x")],
    "symlink_out": [_special("TOP/etc", tarfile.SYMTYPE, "/etc")],
    "hardlink_out": [_special("TOP/pw", tarfile.LNKTYPE, "/etc/hostname")],
    "device": [_special("TOP/null", tarfile.CHRTYPE)],
    "fifo": [_special("TOP/pipe", tarfile.FIFOTYPE)],
    "setuid": [_file("TOP/run.sh", 0o4777)],
    "world_writable": [_file("TOP/models.json", 0o666)],
}
EMULATED_CASES = ("dotdot", "through_symlink", "hardlink_out", "device", "world_writable")


def _bundle(path: Path, members) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in [(tarfile.TarInfo("TOP"), None), *members]:
            if info.name == "TOP":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _prepare(argv: list[str], root: Path, archive: Path, sha: str, env=None):
    """`release.py prepare` of `archive` (under root/releases) with the Python `argv`."""
    return subprocess.run(
        [
            *argv,
            str(RELEASE_PY),
            "prepare",
            "--dir",
            str(root),
            "--release",
            RELEASE,
            "--archive",
            archive.name,
            "--sha256",
            sha,
            "--target",
            "bookworm-arm64",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _pythons():
    """(name, argv prefix to run a script, environment) of each Python to try."""
    yield "host", [sys.executable], None
    from tests.support import EnvironmentUnavailable
    from tests.support.pi import ensure_pi_python

    try:
        py = ensure_pi_python("bookworm-arm64")
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated bookworm-arm64 userland unavailable: {exc}")
    yield "bookworm-3.11.2", py.command([]), py.environ()


@pytest.mark.parametrize("python", ["host", "bookworm-3.11.2"])
def test_crafted_bundles_refused_nothing_written(tmp_path, python):
    name, argv, env = next(p for p in _pythons() if p[0] == python)
    if name != "host":
        version = subprocess.run(
            [
                *argv,
                "-c",
                "import sys, tarfile; print(sys.version.split()[0], "
                "hasattr(tarfile, 'data_filter'))",
            ],
            capture_output=True,
            text=True,
            env=env,
        ).stdout.split()
        assert version == ["3.11.2", "False"], "the Python that has no data filter"
    root = tmp_path / "device"
    (root / "releases" / "old").mkdir(parents=True)
    os.symlink("releases/old", root / "current")
    outside = tmp_path / "x"
    # Under qemu each run costs seconds: there, one case of each kind the data filter covers.
    cases = CRAFTED if name == "host" else {k: CRAFTED[k] for k in EMULATED_CASES}
    for case, members in cases.items():
        archive = root / "releases" / f".{RELEASE}.tar.gz.part"
        proc = _prepare(argv, root, archive, _bundle(archive, members), env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3 and len(lines) == 1, (case, proc.stderr)
        assert "unsafe to unpack, nothing was written" in lines[0], (case, lines[0])
        assert sorted(os.listdir(root / "releases")) == ["old"], case  # no partial, no upload
        assert os.readlink(root / "current") == "releases/old", case
        assert not outside.exists() and not (root / "x").exists(), case
        assert not (tmp_path / "abs").exists() and not Path("/abs").exists(), case


def test_a_sound_bundle_gets_past_the_unpacking(tmp_path):
    """The control: files, folders, an inside symlink and hard link unpack (verify.py next)."""
    root = tmp_path / "device"
    (root / "releases").mkdir(parents=True)
    archive = root / "releases" / f".{RELEASE}.tar.gz.part"
    sha = _bundle(
        archive,
        [
            _file("TOP/bin/run.sh", 0o755),
            _special("TOP/run", tarfile.SYMTYPE, "bin/run.sh"),
            _special("TOP/copy", tarfile.LNKTYPE, "TOP/bin/run.sh"),
        ],
    )
    proc = _prepare([sys.executable], root, archive, sha)
    assert proc.returncode == 3 and "verify failed" in proc.stderr, proc.stderr
