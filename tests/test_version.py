"""`edgeship --version` and `python -m edge_runtime --version`, installed and on a bundle's copy
of the package (no `edgeship` distribution there); `--help` without a stray `<bool>` metavar."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
from typer.testing import CliRunner

from tests.support.procs import REPO


def _pyproject_version() -> str:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    return re.search(r'(?m)^version\s*=\s*"([^"]+)"', project).group(1)


def test_edgeship_version():
    from edgeship.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"edgeship {metadata.version('edgeship')}\n"


def test_edge_runtime_version_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "--version"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"edgeship {metadata.version('edgeship')}\n"


def test_edge_runtime_version_on_a_bundle_copy(tmp_path):
    """As on a Pi: the package copied alone, no distribution metadata, no site-packages."""
    shutil.copytree(REPO / "edge_runtime", tmp_path / "edge_runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "edge_runtime", "--version"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"edgeship {_pyproject_version()}\n"


def test_source_version_matches_pyproject():
    from edge_runtime._version import __version__

    assert __version__ == _pyproject_version()


@pytest.mark.parametrize(
    "args, flag",
    [([], "--version"), (["predict"], "--json"), (["deploy", "push"], "--bench")],
)
def test_help_has_no_bool_metavar(args, flag):
    """Typer 0.29 prints `<bool>` beside every flag, `--help` included (pyproject pins <0.29)."""
    from edgeship.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert flag in result.output and "--help" in result.output
    assert "<bool>" not in result.output
