"""`deploy fleet --camera SOURCE`: checked before any host, handed to the role, and the role's
activate command carries it to release.py (rendered by Jinja2 with Ansible's `quote`, which is
`shlex.quote`). The push side runs for real in test_deploy_serve.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.deploy.fleet.rollout import FleetOptions, _vars

ROLE = Path(__file__).parents[1] / "edgeship/deploy/fleet/playbook/roles/edgeship"
CAMERA = "cmd:rpicam-vid -t 0 -n --codec mjpeg -o - | tee /tmp/x's"


def _activate_task() -> str:
    def walk(tasks):
        for task in tasks:
            yield task
            yield from walk(task.get("block", []))

    tasks = yaml.safe_load((ROLE / "tasks/main.yml").read_text())
    (task,) = [t for t in walk(tasks) if t.get("name", "").startswith("Activate")]
    return task["ansible.builtin.raw"]


def _render(**overrides) -> list[str]:
    import jinja2

    env = jinja2.Environment()
    env.filters["quote"] = lambda v: shlex.quote(str(v))
    env.filters["bool"] = lambda v: v is True or str(v).lower() in ("1", "true", "yes")
    values = {
        **yaml.safe_load((ROLE / "defaults/main.yml").read_text()),
        "edgeship_release": "r1",
        "edgeship_dir": "/home/pi/edgeship",
        **overrides,
    }
    text = env.from_string(_activate_task()).render(**values)
    return shlex.split(text.replace("${PYTHON:-python3}", "python3"))


def test_the_role_passes_the_camera_to_activate():
    argv = _render(edgeship_serve=True, edgeship_serve_camera=CAMERA)
    assert argv[argv.index("--camera") + 1] == CAMERA and "--serve" in argv
    assert "--camera" not in _render(edgeship_serve=True)
    assert "--camera" not in _render(edgeship_serve=False, edgeship_serve_camera=CAMERA)


def test_fleet_vars_carry_the_camera(tmp_path):
    class Bundle:
        path, sha256, top, manifest = tmp_path / "b.tar.gz", "0" * 64, "b", {"targets": []}

    data = _vars(Bundle, FleetOptions(serve=True, camera="auto"), "r1", tmp_path)
    assert data["edgeship_serve_camera"] == "auto"
    assert "edgeship_serve_camera" not in _vars(Bundle, FleetOptions(serve=True), "r1", tmp_path)


def test_fleet_camera_without_serve_is_one_error_line(tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("pi ansible_host=192.0.2.1\n")  # TEST-NET: never reached
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "fleet",
            str(tmp_path / "b.tar.gz"),
            "--inventory",
            str(inventory),
            "--camera",
            "auto",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--camera goes with --serve" in lines[0], result.stderr
