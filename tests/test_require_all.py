"""`EDGESHIP_REQUIRE_ALL=1` (CI) turns every skip into a failure: a skip inside a test, and a
whole module skipped at import (`allow_module_level=True`, `importorskip`), which pytest
reports at collection, not per test. A real pytest run of a throwaway folder, with this
repository's conftest loaded as a plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import REPO

SKIPPING = {
    "test_module_skip.py": (
        "import pytest\npytest.skip('no widget here', allow_module_level=True)\n"
        "def test_never():\n    pass\n"
    ),
    "test_importorskip.py": (
        "import pytest\npytest.importorskip('no_such_module_edgeship')\n"
        "def test_never():\n    pass\n"
    ),
    "test_skip_inside.py": (
        "import pytest\ndef test_skips():\n    pytest.skip('no gadget here')\n"
    ),
}


def _pytest(folder, name: str, require_all: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGESHIP_REQUIRE_ALL"}
    env["PYTHONPATH"] = str(REPO)
    if require_all:
        env["EDGESHIP_REQUIRE_ALL"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            name,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", sorted(SKIPPING))
def test_a_skip_fails_under_require_all(tmp_path, name):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / name).write_text(SKIPPING[name])
    relaxed = _pytest(tmp_path, name, require_all=False)
    # 5: "no tests ran" when the whole module skipped; a skip is no failure without the variable
    assert relaxed.returncode in (0, 5) and "1 skipped" in relaxed.stdout, relaxed.stdout
    strict = _pytest(tmp_path, name, require_all=True)
    assert strict.returncode != 0, strict.stdout
    assert "EDGESHIP_REQUIRE_ALL=1 requires every test" in strict.stdout, strict.stdout
    assert "skipped" not in strict.stdout.splitlines()[-1], strict.stdout
