"""The command lines that run the bundle's device script (release.py) and what their output means.

The steps themselves live in edgeship/deploy/pi/remote/release.py, inside every bundle; `push` runs
them over its SSH session with these lines, the fleet playbook with the same arguments.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from typing import Any

from edgeship.deploy.errors import (
    ManifestMismatchError,
    RemoteDiskFullError,
    RemoteStepError,
    TransferError,
)
from edgeship.deploy.pi.bundle_file import DEVICE_SCRIPT

PYTHON = '"${PYTHON:-python3}"'


def upload_script(remote_dir: str, release: str) -> str:
    """sh: the bundle from stdin to releases/.R.tar.gz.part (`remote_dir` sh-quoted)."""
    rel = shlex.quote(release)
    return (
        f"set -e; mkdir -p {remote_dir}/releases {remote_dir}/venvs; "
        f"cd {remote_dir}/releases; test ! -e {rel}; cat > .{rel}.tar.gz.part"
    )


def prepare_script(
    remote_dir: str,
    release: str,
    top: str,
    sha256: str,
    target: str,
    bench: bool = False,
    threads: str | None = None,
) -> str:
    """sh: release.py (taken from the upload) `prepare`: verify, unpack, install, smoke, doctor,
    bench; nothing of `current` changes."""
    rel = shlex.quote(release)
    part = f".{release}.tar.gz.part"
    script = shlex.quote(f".{release}.{DEVICE_SCRIPT}")
    args = [
        "prepare",
        "--release",
        release,
        "--archive",
        part,
        "--sha256",
        sha256,
        "--target",
        target,
    ]
    if bench:
        args.append("--bench")
    if threads:
        args += ["--threads", threads]
    return (
        f"cd {remote_dir}/releases || exit 3; "
        f"if ! tar -xzOf .{rel}.tar.gz.part {shlex.quote(top + '/' + DEVICE_SCRIPT)} > {script}; "
        f"then rm -f {script} .{rel}.tar.gz.part; echo 'error: edgeship-transfer-mismatch: the "
        f"upload is not a readable bundle' >&2; exit 3; fi; "
        f'{PYTHON} {script} {" ".join(shlex.quote(a) for a in args)} --dir "$(cd .. && pwd)"; '
        f"rc=$?; rm -f {script}; exit $rc"
    )


def activate_script(remote_dir: str, release: str, serve: dict[str, Any] | None, keep: int) -> str:
    """sh: release.py `activate`: switch `current`, restart and check the service (or roll
    back), keep N releases."""
    args = ["activate", "--release", release, "--keep", str(keep)]
    if serve is not None:
        args += ["--serve", "--port", str(serve["port"]), "--host", serve["host"]]
        if serve.get("token"):
            args.append("--token")
        if serve.get("camera"):
            args += ["--camera", serve["camera"]]
    return _in_release(remote_dir, release, args)


def abort_script(remote_dir: str, release: str) -> str:
    """sh: release.py `abort`: remove what a failed deploy left (never `current`)."""
    rel = shlex.quote(release)
    return (
        f"cd {remote_dir} 2>/dev/null || exit 0; rm -f releases/.{rel}.tar.gz.part; "
        f"[ -f releases/{rel}/{DEVICE_SCRIPT} ] || exit 0; "
        + _in_release(".", release, ["abort", "--release", release])
    )


def _in_release(remote_dir: str, release: str, args: list[str]) -> str:
    script = shlex.quote(f"releases/{release}/{DEVICE_SCRIPT}")
    return (
        f"cd {remote_dir} && {PYTHON} {script} {' '.join(shlex.quote(a) for a in args)} "
        f'--dir "$(pwd)"'
    )


def one_line(text: str, limit: int = 300) -> str:
    """The line of a step's output that says what failed."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line.removeprefix("error: ")[:limit]


def check(proc: subprocess.CompletedProcess, target: object, step: str) -> str:
    """Raise the error a failed device step deserves; return its stdout when it succeeded."""
    if proc.returncode == 0:
        return proc.stdout
    out = proc.stderr + "\n" + proc.stdout
    untouched = "; the previous release is untouched" if step != "activate" else ""
    if "No space left on device" in out or "Disk quota exceeded" in out:
        raise RemoteDiskFullError(
            f"{target}: the device ran out of disk space during {step}; free some space "
            f"(df -h) and push again{untouched}. Received: {one_line(out)}"
        )
    if "edgeship-transfer-mismatch" in out:
        raise TransferError(
            f"{target}: the uploaded bundle's sha256 differs from the local one (transfer cut "
            f"off or corrupted); push again. Received: {one_line(out)}"
        )
    if "manifest mismatch" in out:
        raise ManifestMismatchError(f"{target}: the device refused the bundle: {one_line(out)}")
    if proc.returncode == 3 and step in ("prepare", "activate"):  # release.py's own error line
        raise RemoteStepError(f"{target}: {one_line(out)}{untouched}")
    raise RemoteStepError(
        f"{target}: {step} failed on the device (exit {proc.returncode}){untouched}. "
        f"Received: {one_line(out)}"
    )


def progress_line(line: str) -> tuple[str, str] | None:
    """(step, detail) of one of release.py's progress lines, else None."""
    if not line.startswith('{"step"'):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return str(data.get("step")), str(data.get("detail", ""))


def result_of(stdout: str, target: object, step: str) -> dict[str, Any]:
    """The {"result": ...} line release.py printed last."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith('{"result"'):
            try:
                return json.loads(line)["result"]
            except (ValueError, KeyError):
                break
    raise RemoteStepError(
        f"{target}: {step} printed no result on the device. Received: {one_line(stdout)}"
    )
