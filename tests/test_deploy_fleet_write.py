"""`edgeship deploy fleet --write DIR` and the option errors refused before any host is contacted.

The written playbook is checked by Ansible itself (`ansible-playbook --syntax-check`) and by
`ansible-lint` (the `production` profile); no host is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (make install installs the fleet and dev extras)")
        return found
    return str(path)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("w") / "playbook"
    result = runner.invoke(app, ["deploy", "fleet", "--write", str(dest)])
    assert result.exit_code == 0, result.output
    return dest


def test_write_gives_the_playbook_role_and_example_inventory(written):
    files = {p.relative_to(written).as_posix() for p in written.rglob("*") if p.is_file()}
    assert {
        "site.yml",
        "inventory.example.ini",
        "targets.py",
        "roles/edgeship/tasks/main.yml",
        "roles/edgeship/tasks/record.yml",
        "roles/edgeship/defaults/main.yml",
        "roles/edgeship/meta/main.yml",
    } <= files
    example = (written / "inventory.example.ini").read_text()
    for var in (
        "ansible_host",
        "ansible_user",
        "ansible_ssh_private_key_file",
        "edgeship_remote_dir",
    ):
        assert var in example
    assert not list(written.parent.glob(".*partial")), "nothing half-written left"


def test_write_never_overwrites(written):
    before = (written / "site.yml").read_text()
    result = runner.invoke(app, ["deploy", "fleet", "--write", str(written)])
    assert result.exit_code == 2
    assert "new or empty folder" in result.stderr and "Traceback" not in result.stderr
    assert (written / "site.yml").read_text() == before


def test_ansible_accepts_the_playbook(written):
    proc = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", "inventory.example.ini", "site.yml"],
        cwd=written,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_is_clean(written):
    proc = subprocess.run(
        [_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=written,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "HOME": str(written.parent)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--threads", "1,2"], "--threads goes with --bench"),
        (["--serve-port", "9000"], "--serve-port goes with --serve"),
        (["--serial", "0"], "--serial takes N or N%"),
        (["--max-fail-percent", "101"], "--max-fail-percent takes 0..100"),
    ],
)
def test_option_errors_before_any_host(tmp_path, args, fragment):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("pi ansible_host=192.0.2.1\n")  # TEST-NET: never reached
    bundle = tmp_path / "not-read.tar.gz"  # the options are checked first
    result = runner.invoke(
        app, ["deploy", "fleet", str(bundle), "--inventory", str(inventory), *args]
    )
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_a_missing_inventory_is_one_line(tmp_path):
    bundle = tmp_path / "not-read.tar.gz"
    result = runner.invoke(
        app, ["deploy", "fleet", str(bundle), "--inventory", str(tmp_path / "none.ini")]
    )
    assert result.exit_code == 2
    assert "inventory file does not exist" in result.stderr
