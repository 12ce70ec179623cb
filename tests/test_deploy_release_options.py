"""`deploy push` and `deploy fleet` share one set of release options, checked once, the same way."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.deploy.errors import DeployError
from edgeship.deploy.fleet import FleetOptions
from edgeship.deploy.pi.options import ReleaseOptions

runner = CliRunner()

BAD = [
    (["--threads", "1,2"], "--threads goes with --bench"),
    (["--serve-port", "8081"], "--serve-port goes with --serve"),
    (["--serve-host", "0.0.0.0"], "--serve-host goes with --serve"),
    (["--serve-token-file", "token.txt"], "--serve-token-file goes with --serve"),
    (["--camera", "auto"], "--camera goes with --serve"),
    (["--serve", "--serve-port", "70000"], "--serve-port must be in 1..65535"),
    (["--serve", "--serve-host", "1.2.3.4; rm -rf /"], "--serve-host must be an address"),
    (["--serve", "--camera", "auto\nrm"], "--camera must be one line"),
    (["--keep", "-1"], "--keep takes 0 (all) or more"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD)
def test_push_and_fleet_refuse_the_same_options_alike(tmp_path, args, fragment):
    """One `error:` line, exit 2, the same words from both commands (no host, no Ansible)."""
    bundle = tmp_path / "missing.tar.gz"  # never read: the options fail first
    commands = {
        "push": ["deploy", "push", str(bundle), "--host", "pi@127.0.0.1", "--port", "1"],
        "fleet": ["deploy", "fleet", str(bundle), "--inventory", str(tmp_path / "hosts.ini")],
    }
    lines = {}
    for name, argv in commands.items():
        result = runner.invoke(app, [*argv, *args])
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, (name, result.output)
        assert "Traceback" not in result.stderr, result.stderr
        lines[name] = errors[0]
    assert fragment in lines["push"] and lines["push"] == lines["fleet"], lines


def test_fleet_options_are_release_options():
    """The fleet's options extend push's: the same fields and checks, plus batches."""
    options = FleetOptions(serve=True, serve_port=8081, camera="auto", serial="25%")
    assert isinstance(options, ReleaseOptions)
    settings = options.serve_settings
    assert settings is not None and (settings.port, settings.camera) == (8081, "auto")
    assert ReleaseOptions().serve_settings is None
    with pytest.raises(DeployError, match="--serial"):
        FleetOptions(serial="x")
    with pytest.raises(DeployError, match="--threads goes with --bench"):
        FleetOptions(threads="1,2")
