"""The hosts of an Ansible inventory (INI or YAML), read by `ansible-inventory --list`."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.deploy.errors import DeployError
from edgeship.deploy.fleet.ansible import find


@dataclass(frozen=True)
class InventoryHost:
    """One host of the inventory and the variables edgeship reads."""

    name: str
    address: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    remote_dir: str = "edgeship"

    @classmethod
    def from_vars(cls, name: str, hostvars: dict[str, Any]) -> InventoryHost:
        """The host named `name` with its `ansible_*` and `edgeship_*` variables."""
        key = hostvars.get("ansible_ssh_private_key_file")
        port = hostvars.get("ansible_port")
        return cls(
            name=name,
            address=str(hostvars.get("ansible_host") or name),
            user=hostvars.get("ansible_user"),
            port=int(port) if port else None,
            identity=Path(os.path.expanduser(str(key))) if key else None,
            remote_dir=str(hostvars.get("edgeship_remote_dir") or "edgeship"),
        )


def inventory_hosts(inventory: str | os.PathLike, limit: str | None = None) -> list[InventoryHost]:
    """The inventory's hosts (matching `limit`, Ansible's pattern), in inventory order."""
    path = Path(inventory)
    if not path.exists():
        raise DeployError(f"The inventory file does not exist. Received: --inventory {path}")
    argv = [find("ansible-inventory"), "-i", str(path), "--list"]
    if limit:
        argv += ["--limit", limit]
    # Quiet whatever verbosity the caller's environment or ansible.cfg asks for: stdout is JSON.
    env = {**os.environ, "ANSIBLE_VERBOSITY": "0"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)
    try:
        data = json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        why = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        raise DeployError(
            f"ansible-inventory cannot read the inventory; check its syntax. Received: "
            f"{path}: {why[-1][:300]}"
        )
    hostvars = data.get("_meta", {}).get("hostvars", {})
    names: list[str] = []

    def walk(group: str) -> None:
        entry = data.get(group, {})
        for host in entry.get("hosts", []):
            if host not in names:
                names.append(host)
        for child in entry.get("children", []):
            walk(child)

    walk("all")
    if not names:
        raise DeployError(
            f"The inventory has no hosts{' matching --limit' if limit else ''}. "
            f"Received: {path}" + (f", --limit {limit}" if limit else "")
        )
    return [InventoryHost.from_vars(n, hostvars.get(n, {})) for n in names]
