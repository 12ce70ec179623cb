"""Run a rollout: `ansible-playbook` on edgeship's playbook, then one record per host."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgeship.deploy.fleet.ansible as ansible
from edgeship.deploy.errors import DeployError
from edgeship.deploy.fleet.inventory import inventory_hosts
from edgeship.deploy.fleet.report import FleetReport, collect
from edgeship.deploy.pi.bundle_file import load_bundle, release_id
from edgeship.deploy.pi.options import ReleaseOptions, check_push_options, with_token
from edgeship.deploy.pi.targets import PROBE_SCRIPT

PLAYBOOK = Path(__file__).parent / "playbook"
_SERIAL = re.compile(r"^[1-9][0-9]*%?$")


@dataclass(frozen=True)
class FleetOptions(ReleaseOptions):
    """How to roll out: push's release options (bench, service, keep), then batches, failure
    threshold, results."""

    limit: str | None = None
    serial: str | None = None  # "3" or "25%"; None: all hosts in one batch
    max_fail_percent: int | None = None
    check: bool = False
    forks: int | None = None
    known_hosts: Path | None = None
    results: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.serial is not None and not _SERIAL.match(self.serial):
            raise DeployError(f"--serial takes N or N%. Received: --serial {self.serial}")
        if self.max_fail_percent is not None and not 0 <= self.max_fail_percent <= 100:
            raise DeployError(f"--max-fail-percent takes 0..100. Received: {self.max_fail_percent}")


def _vars(bundle, options: FleetOptions, release: str, results: Path) -> dict:
    data = {
        "edgeship_bundle": str(bundle.path.resolve()),
        "edgeship_bundle_sha256": bundle.sha256,
        "edgeship_bundle_top": bundle.top,
        "edgeship_bundle_targets": list(bundle.manifest["targets"]),
        "edgeship_release": release,
        "edgeship_probe_script": str(PROBE_SCRIPT),
        "edgeship_results_dir": str(results),
        "edgeship_keep": options.keep,
        "edgeship_bench": options.bench,
        "edgeship_threads": options.threads or "",
        "edgeship_serve": options.serve,
    }
    for key, value in (
        ("edgeship_serial", options.serial),
        ("edgeship_max_fail_percent", options.max_fail_percent),
        ("edgeship_serve_port", options.serve_port),
        ("edgeship_serve_host", options.serve_host),
        ("edgeship_serve_token_file", options.serve_token_file),
        ("edgeship_serve_camera", options.camera),
    ):
        if value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    if options.serve_token_file is not None:
        data["edgeship_serve_token_file"] = str(Path(options.serve_token_file).resolve())
    return {**data, **options.extra}


def run_fleet(
    bundle: str | os.PathLike,
    inventory: str | os.PathLike,
    options: FleetOptions,
    on_line: Callable[[str], None] | None = None,
) -> FleetReport:
    """Roll `bundle` out to the inventory's hosts; the report has one row per host."""
    if not Path(inventory).is_file():
        raise DeployError(f"The inventory file does not exist. Received: --inventory {inventory}")
    b = load_bundle(bundle)
    check_push_options(b, None, options.threads)
    if options.serve_token_file is not None:
        with_token(options.serve_settings, Path(options.serve_token_file))
    hosts = inventory_hosts(inventory, options.limit)
    playbook = find_playbook()
    release = release_id(b.sha256)
    with tempfile.TemporaryDirectory(prefix="es-fleet-") as tmp:
        work = Path(tmp)
        records = work / "records"
        records.mkdir()
        (work / "vars.json").write_text(json.dumps(_vars(b, options, release, records)))
        argv = [
            ansible.find("ansible-playbook"),
            "-i",
            str(Path(inventory).resolve()),
            str(playbook / "site.yml"),
            "-e",
            f"@{work / 'vars.json'}",
        ]
        if options.limit:
            argv += ["--limit", options.limit]
        if options.check:
            argv.append("--check")
        env = ansible.environment(work, options.known_hosts, options.forks)
        code, output = ansible.run(argv, env, on_line or (lambda _line: None))
        return collect(b, hosts, records, code, output, options.results, options.check)


def find_playbook() -> Path:
    """The playbook folder shipped with edgeship."""
    if not (PLAYBOOK / "site.yml").is_file():
        raise DeployError(
            f"edgeship's playbook is missing; reinstall edgeship. Received: {PLAYBOOK}"
        )
    return PLAYBOOK


def write_playbook(dest: str | os.PathLike) -> list[Path]:
    """Copy the playbook, the role and a commented example inventory into `dest` (new or
    empty); returns the files written."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DeployError(
            f"--write needs a new or empty folder (nothing is overwritten). Received: {dest}"
        )
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        shutil.copytree(
            find_playbook(), partial, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        shutil.copyfile(PROBE_SCRIPT, partial / "targets.py")
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        raise DeployError(f"cannot write the playbook ({err}). Received: {dest}") from None
    return sorted(p for p in dest.rglob("*") if p.is_file())
