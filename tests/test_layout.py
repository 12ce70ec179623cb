"""The package layout's promises: imports point one way, and a machine with only the `edge`
extra gets one clear line (not a traceback) from a command that needs the `desktop` extra."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.procs import REPO, one_error_line

STAGES = ("train", "convert", "benchmarks", "deploy", "tune")  # in pipeline order
# What each package may import of the project's own (DESIGN.md: edgeship -> stages -> runtime):
# a stage may use an earlier stage, never a later one (ARCHITECTURE.md).
ALLOWED = {
    "edge_runtime": {"edge_runtime"},
    **{stage: {"edge_runtime", *STAGES[: i + 1]} for i, stage in enumerate(STAGES)},
}
FORBIDDEN_IN_RUNTIME = {"tensorflow", "keras", "tf_keras"}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    # tests/ and studies/ are not in the wheel: nothing shipped may import them
    own = {"edgeship", "edge_runtime", *STAGES, "tests", "studies"}
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    wrong = {}
    for path in files:
        imported = _imported_top_levels(path)
        bad = (imported & own) - ALLOWED[package]
        if package == "edge_runtime":
            bad |= imported & FORBIDDEN_IN_RUNTIME
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert wrong == {}


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--limit", "10", "--out", "{tmp}/run"],
        ["convert", "{tmp}/m.keras", "--out", "{tmp}/run"],
    ],
)
def test_desktop_command_without_tensorflow_is_one_line(no_tf_env, tmp_path, args):
    if args[0] == "convert":  # a real model file: convert checks it before importing Keras
        import keras

        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()])
        model.save(tmp_path / "m.keras")
    line = one_error_line("edgeship", [a.format(tmp=tmp_path) for a in args], env=no_tf_env)
    assert line.startswith("error: `") and f"edgeship {args[0]}` needs " in line
    assert "pip install 'edgeship[desktop]'" in line and "blocked for the test" in line
    assert not (tmp_path / "run").exists()


MAX_LINES = 500
# Modules known to be over MAX_LINES, each with what splits it. A listed module that fits (or
# is gone) fails the test below: take it off the list.
LONG_MODULES: dict[str, str] = {}
NOT_SOURCE = {"tests", "runs", "build", "dist", "node_modules", "mutants"}  # mutants: mutmut's copy


def _source_modules() -> dict[str, int]:
    """Every .py of the project outside tests/ (and outside hidden or generated folders)."""
    counts = {}
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in NOT_SOURCE or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.as_posix().startswith("edge_runtime/metadata_schema/"):  # flatc's output
            continue
        with path.open(encoding="utf-8") as f:
            counts[rel.as_posix()] = sum(1 for _ in f)
    return counts


def test_no_module_over_500_lines():
    counts = _source_modules()
    assert "edge_runtime/classifier.py" in counts and "edgeship/cli.py" in counts
    over = {rel: n for rel, n in counts.items() if n > MAX_LINES and rel not in LONG_MODULES}
    assert over == {}, f"split these (at most {MAX_LINES} lines a module): {over}"
    stale = {rel: counts.get(rel) for rel in LONG_MODULES if counts.get(rel, 0) <= MAX_LINES}
    assert stale == {}, f"now short (or gone): remove from LONG_MODULES: {stale}"
