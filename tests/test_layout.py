"""The package layout's promises: imports point one way, and a machine with only the `edge`
extra gets one clear line (not a traceback) from a command that needs the `desktop` extra."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.procs import REPO, one_error_line

STAGES = ("train", "convert", "bench", "deploy", "tune")  # edgeship's, in pipeline order
# What each package may import of the project's own: edgeship's top (cli, pipeline) -> its
# stages -> edge_runtime; a stage may use an earlier stage, never a later one (ARCHITECTURE.md).
ALLOWED = {
    "edge_runtime": {"edge_runtime"},
    **{
        f"edgeship.{stage}": {"edge_runtime", *(f"edgeship.{s}" for s in STAGES[: i + 1])}
        for i, stage in enumerate(STAGES)
    },
}
# Inside edgeship.deploy, by target: the fleet drives pi's bundle and release steps; the web
# app carries the phone models; pi, mobile and web know nothing of the others (the CLI builds
# the web app and hands `build_bundle` a folder).
DEPLOY_TARGETS = {
    "pi": {"pi"},
    "fleet": {"fleet", "pi"},
    "mobile": {"mobile"},
    "web": {"web", "mobile"},
}
FORBIDDEN_IN_RUNTIME = {"tensorflow", "keras", "tf_keras", "torch", "edgeship"}
NOT_SHIPPED = {"tests", "studies", "tools", "docs"}  # beside the packages, never imported by them


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _own(module: str) -> str | None:
    """The project package `module` belongs to (edge_runtime, edgeship.<stage>, edgeship's top,
    a folder beside them), else None."""
    parts = module.split(".")
    if parts[0] == "edgeship":
        return f"edgeship.{parts[1]}" if len(parts) > 1 and parts[1] in STAGES else "edgeship"
    if parts[0] in {"edge_runtime", *NOT_SHIPPED}:
        return parts[0]
    return None


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    files = sorted((REPO / package.replace(".", "/")).rglob("*.py"))
    assert files
    wrong = {}
    for path in files:
        imported = _imported_modules(path)
        bad = {_own(m) for m in imported} - {None} - ALLOWED[package]
        if package == "edge_runtime":
            bad |= {m.split(".")[0] for m in imported} & FORBIDDEN_IN_RUNTIME
        if bad:
            wrong[str(path.relative_to(REPO))] = sorted(bad)
    assert wrong == {}


@pytest.mark.parametrize("target", sorted(DEPLOY_TARGETS))
def test_deploy_targets_import_one_way(target):
    files = sorted((REPO / "edgeship" / "deploy" / target).rglob("*.py"))
    assert files
    wrong = {}
    for path in files:
        used = {
            m.split(".")[2]
            for m in _imported_modules(path)
            if m.startswith("edgeship.deploy.") and m.split(".")[2] in (*DEPLOY_TARGETS, "cli")
        }
        if used - DEPLOY_TARGETS[target]:
            wrong[str(path.relative_to(REPO))] = sorted(used - DEPLOY_TARGETS[target])
    assert wrong == {}


def test_the_runtime_keeps_its_core_at_the_top():
    """edge_runtime's top level holds the classifier's core; metadata and images have folders."""
    top = sorted(p.name for p in (REPO / "edge_runtime").glob("*.py"))
    assert len(top) <= 15, top
    for folder in ("metadata", "image", "serve", "device"):
        assert (REPO / "edge_runtime" / folder / "__init__.py").is_file()


def test_the_wheel_installs_two_names(tmp_path):
    """The built wheel holds `edgeship` and `edge_runtime` (and its .dist-info), nothing else:
    no generic top-level name to shadow a user's `train` or `deploy`, no tests, no studies."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".*", "build", "dist", "runs", "mutants", "node_modules", "*.egg-info", "__pycache__"
    )
    shutil.copytree(REPO, src, ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("edgeship-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgeship", "edge_runtime"}
    # the data files the code opens beside it travel too
    for data in (
        "edgeship/deploy/pi/remote/install.sh",
        "edgeship/deploy/web/app/index.html",
        "edgeship/deploy/fleet/playbook/site.yml",
        "edge_runtime/serve/page.html",
        "edgeship/py.typed",  # both packages carry their types (PEP 561)
        "edge_runtime/py.typed",
    ):
        assert data in names, data


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
        if rel.as_posix().startswith("edge_runtime/metadata/schema/"):  # flatc's output
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
