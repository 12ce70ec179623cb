"""Finding and running Ansible's commands (ansible-core, the `fleet` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgeship.deploy.errors import DeployError

INSTALL_HINT = "pip install 'edgeship[fleet]' (ansible-core 2.19)"


def find(command: str) -> str:
    """`ansible-playbook` / `ansible-inventory`: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(command)
    if found is None:
        raise DeployError(
            f"`deploy fleet` runs Ansible, and `{command}` is not installed; {INSTALL_HINT}. "
            f"Received: PATH={os.environ.get('PATH', '')}"
        )
    return found


def environment(
    work: Path, known_hosts: Path | None = None, forks: int | None = None
) -> dict[str, str]:
    """Ansible's settings for a rollout: host keys checked, no prompt, its files in `work`."""
    ssh_args = [
        "-o ControlMaster=auto",
        "-o ControlPersist=60s",
        "-o BatchMode=yes",
        "-o StrictHostKeyChecking=yes",
    ]
    if known_hosts is not None:
        ssh_args.append(f"-o UserKnownHostsFile={known_hosts}")
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": " ".join(ssh_args),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_SSH_TRANSFER_METHOD": "piped",  # sh + dd: no sftp subsystem needed
            "ANSIBLE_PYTHON_INTERPRETER": "python3",  # the probe checked it; no discovery
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "False",
            "ANSIBLE_STDOUT_CALLBACK": "default",
        }
    )
    if forks:
        env["ANSIBLE_FORKS"] = str(forks)
    return env


def run(
    argv: Sequence[str], env: dict[str, str], on_line: Callable[[str], None]
) -> tuple[int, str]:
    """Run an Ansible command, each output line to `on_line`; (exit code, all output)."""
    proc = subprocess.Popen(
        list(argv),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None  # a pipe
    lines = []
    for line in proc.stdout:
        lines.append(line)
        on_line(line.rstrip("\n"))
    return proc.wait(), "".join(lines)
