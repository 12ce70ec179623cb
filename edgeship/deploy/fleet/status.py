"""`deploy status --inventory`: every host's status read through Ansible itself.

The status read (edgeship.deploy.pi.service.status_script) runs as one ad-hoc `ansible -m raw` over
the inventory, so each host is reached with the inventory's own settings, exactly as `deploy
fleet` reaches it (`ansible_ssh_common_args` with its `UserKnownHostsFile`, keys, ports, users,
jump hosts); an unreachable host is one
row with Ansible's reason, never the end of the report. Each host's result comes from
ansible-core's own `tree` callback (one JSON file per host).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.deploy.errors import DeployError
from edgeship.deploy.fleet.ansible import environment, find
from edgeship.deploy.fleet.inventory import inventory_hosts
from edgeship.deploy.pi.service import NO_FOLDER_EXIT, status_data, status_script

DIR_MARK = "@@EDGESHIP_DIR@@"
# The remote folder per host, from its `edgeship_remote_dir` (a leading ~/ is the login's
# home, where the command starts anyway), quoted for sh.
DIR_TEMPLATE = (
    "{{ (edgeship_remote_dir | default('edgeship') | string)"
    " | regex_replace('^~/?', '') | default('.', true) | quote }}"
)
STATUS_TIMEOUT_S = 120


@dataclass(frozen=True)
class HostStatus:
    """One host: its status JSON (edgeship.deploy.pi.service.status_script), or why there is
    none."""

    host: str
    data: dict[str, Any] | None = None
    unreachable: bool = False
    error: str | None = None


def _raw_args() -> str:
    """The ad-hoc `raw` command: the status script, verbatim, with the host's folder."""
    before, after = status_script(DIR_MARK).split(DIR_MARK, 1)
    # `cd `: plain text first (args that start with "{" are read as JSON by `ansible -a`)
    assert "{" not in before and "%" not in before, before
    return f"{before}{DIR_TEMPLATE}{{% raw %}}{after}{{% endraw %}}"


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return (lines or ["no output"])[-1][:300]


def _host_status(name: str, result: dict[str, Any] | None) -> HostStatus:
    """A host's ad-hoc result as a HostStatus."""
    if result is None:
        return HostStatus(name, unreachable=True, error="Ansible reported nothing for it")
    if result.get("unreachable"):
        return HostStatus(name, unreachable=True, error=_one_line(result.get("msg", "")))
    stdout = result.get("stdout", "") or ""
    if result.get("rc") == NO_FOLDER_EXIT:
        return HostStatus(name, error="no edgeship folder there; push a bundle first")
    data = None if result.get("failed") else status_data(stdout)
    if data is None:
        why = result.get("stderr") or stdout or result.get("msg", "")
        return HostStatus(
            name, error=f"status failed on the device (exit {result.get('rc')}): {_one_line(why)}"
        )
    return HostStatus(name, data=data)


def inventory_status(
    inventory: Path,
    limit: str | None = None,
    *,
    known_hosts: Path | None = None,
    identity: Path | None = None,
    connect_timeout: int = 10,
) -> list[HostStatus]:
    """Every host of `inventory` (matching `limit`), in inventory order."""
    names = [h.name for h in inventory_hosts(inventory, limit)]
    with tempfile.TemporaryDirectory(prefix="edgeship-status-") as tmp:
        tree = Path(tmp) / "tree"  # ansible-core's `tree` callback: one JSON file per host
        env = environment(Path(tmp), known_hosts, forks=min(len(names), 16))
        env.update(
            {
                "ANSIBLE_LOAD_CALLBACK_PLUGINS": "True",
                "ANSIBLE_CALLBACKS_ENABLED": "tree",
                "ANSIBLE_CALLBACK_TREE_DIR": str(tree),
                "ANSIBLE_STDOUT_CALLBACK": "minimal",
                "ANSIBLE_DIFF_ALWAYS": "False",
                "ANSIBLE_VERBOSITY": "0",
            }
        )
        argv = [
            find("ansible"),
            "all",
            "-i",
            str(inventory),
            "-m",
            "ansible.builtin.raw",
            "-a",
            _raw_args(),
            "-T",
            str(connect_timeout),
        ]
        argv += ["--limit", limit] if limit else []
        argv += ["--private-key", str(identity)] if identity else []
        try:
            proc = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=STATUS_TIMEOUT_S + connect_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(
                f"ansible did not finish the status read within {STATUS_TIMEOUT_S} s. "
                f"Received: --inventory {inventory}"
            ) from None
        results = {}
        for name in names:
            try:
                results[name] = json.loads((tree / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
    if not results and proc.returncode not in (0, 2, 4):
        raise DeployError(
            f"ansible could not read the status of the inventory (exit {proc.returncode}). "
            f"Received: {_one_line(proc.stderr or proc.stdout)}"
        )
    return [_host_status(name, results.get(name)) for name in names]
