"""Which models a run benchmarks: its `.tflite` files, the Keras reference, and staleness checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeshipError
from edge_runtime.files import sha256_file
from edge_runtime.metadata.block import read_metadata, same_source
from edge_runtime.native_log import filtered_native_stderr
from edgeship.bench.errors import BenchError
from edgeship.bench.options import BenchOptions

MODE_ORDER = ("float32", "dynamic", "float16", "int8", "int16x8")
# The desktop reference rows: the Keras model (TensorFlow) or the PyTorch model (eager).
REFERENCE_FORMATS = ("keras", "torch")


@dataclasses.dataclass(frozen=True)
class RunModels:
    """The Keras reference (or None), the selected `.tflite` files, and the reference's sha256
    when it is the recorded source of a conversion (neither the run's model.keras nor --keras)."""

    keras: Path | None
    tflites: list[Path]
    recorded_sha256: str | None = None
    # A PyTorch source (`FILE.pt2` or `FILE.py:FUNCTION`) recorded by convert: the "torch" row.
    torch: str | None = None


def mode_of(path: Path) -> str:
    """The quantization mode a `.tflite` is named for: `model_int8.tflite` -> `int8`."""
    return path.stem.removeprefix("model_")


def find_models(run_dir: Path, options: BenchOptions) -> RunModels:
    """`model.keras` (or None) and the selected `.tflite` files, in the modes' order."""
    if not run_dir.is_dir():
        raise BenchError(
            f"The run directory does not exist or is not a directory. Train and convert first "
            f"(edgeship train --out RUN; edgeship convert RUN/model.keras --out RUN). "
            f"Received: path={run_dir}"
        )
    rank = {mode: i for i, mode in enumerate(MODE_ORDER)}
    tflites = sorted(
        run_dir.glob("*.tflite"), key=lambda p: (rank.get(mode_of(p), len(MODE_ORDER)), p.name)
    )
    keras_path = run_dir / "model.keras" if options.keras is None else Path(options.keras)
    if options.keras is not None and not keras_path.is_file():
        raise BenchError(f"--keras names no Keras model file. Received: keras={keras_path}")
    if not keras_path.is_file() and not tflites:
        found = sorted(p.name for p in run_dir.iterdir())[:10]
        raise BenchError(
            "No models to benchmark: expected model.keras and/or model_<mode>.tflite. Run "
            f"`edgeship convert RUN/model.keras --out RUN` first. Received: path={run_dir}, "
            f"files={found}"
        )
    if options.only:
        known = {name for p in tflites for name in (mode_of(p), p.name, p.stem)}
        unknown = [o for o in options.only if o not in known]
        if unknown:
            raise BenchError(
                f"--only names models that are not in the run directory. Available: "
                f"{sorted(mode_of(p) for p in tflites)}. Received: --only={','.join(options.only)}"
            )
        tflites = [p for p in tflites if options.selects(mode_of(p), p.name)]
    if keras_path.is_file():
        return RunModels(keras_path, tflites)
    recorded = recorded_source_model(tflites)
    if recorded is None:
        return RunModels(None, tflites)
    torch = _torch_spec(tflites, recorded[0])
    if torch is not None:
        return RunModels(None, tflites, recorded[1], torch=torch)
    return RunModels(recorded[0], tflites, recorded[1])


def _source_blocks(tflites: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in tflites:
        try:
            source = (read_metadata(path, sidecar=False) or {}).get("source_model") or {}
        except EdgeshipError:
            continue
        if source.get("path"):
            yield path, source


def _torch_spec(tflites: list[Path], source_path: Path) -> str | None:
    """`FILE.pt2` or `FILE.py:FUNCTION` when the recorded source is a PyTorch model."""
    for _, source in _source_blocks(tflites):
        if Path(source["path"]) == source_path and source.get("framework") == "torch":
            func = source.get("function")
            return f"{source['path']}:{func}" if func else str(source["path"])
    return None


def _recorded_sources(tflites: list[Path]) -> Iterator[tuple[Path, Path, str | None]]:
    """(tflite, source model path, its recorded sha256) for each `.tflite` that records one."""
    for path, source in _source_blocks(tflites):
        yield path, Path(source["path"]), source.get("sha256")


def recorded_source_model(tflites: list[Path]) -> tuple[Path, str] | None:
    """The Keras file a `.tflite` was converted from (`source_model` in its metadata) and its
    sha256, if it is still there with the same sha256: the desktop reference of a model
    converted from a file outside the run."""
    for _, keras_path, recorded in _recorded_sources(tflites):
        if keras_path.is_file() and sha256_file(keras_path) == recorded:
            return keras_path, recorded
    return None


def no_keras_note(tflites: list[Path]) -> str:
    """Why the report has no Keras row: none in the run, or the recorded source is gone."""
    for path, keras_path, recorded in _recorded_sources(tflites):
        if not keras_path.is_file():
            what = "is gone"
        elif sha256_file(keras_path) != recorded:
            what = "has changed since (another sha256)"
        else:
            continue
        return (
            f"the Keras model {path.name} was converted from {what}: {keras_path}. No Keras "
            "row, no agreement figures; name the desktop model with --keras PATH"
        )
    return "no model.keras in the run: no agreement figures"


def models_metadata(run_dir: Path, tflites: list[Path], options: BenchOptions) -> dict[str, Any]:
    """Class names and input of a run without model.json: a `.tflite`'s edgeship metadata,
    else (with --test-data) what a stock model itself says."""
    for path in tflites:
        try:
            meta = read_metadata(path)
        except EdgeshipError:
            continue
        if meta:
            return meta
    if options.test_data is not None and tflites:
        # A stock model (no edgeship metadata): its shape and class count from the model.
        from edge_runtime.classifier import EdgeClassifier

        with filtered_native_stderr():
            clf = EdgeClassifier.load(tflites[0])
        # The pixel scaling the runtime applies, so that a --keras row is fed the same input.
        return {
            "class_names": list(clf.class_names),
            "input": {
                "shape": list(clf.input_shape),
                "scale": clf.input_scale,
                "offset": clf.input_offset,
            },
        }
    raise BenchError(
        "No model.json and no .tflite with edgeship metadata: cannot tell which test set to use. "
        f"Pass your own with --test-data DIR|FILE.npz. Received: path={run_dir}"
    )


def check_stale(
    path: Path,
    run_meta: dict[str, Any] | None,
    reference: Path | str | None,
    reference_sha: str | None,
) -> None:
    """Raise `BenchError` if `path` was converted from another model.keras than the run's, or
    records a source Keras file (`convert` of a file outside the run) other than the run's
    desktop reference: a leftover of another model's conversion into the same folder, which
    would be compared with the wrong Keras model."""
    if run_meta is None and reference_sha is None:
        return
    meta = read_metadata(path, sidecar=False)
    if run_meta is not None and meta is not None and not same_source(run_meta, meta):
        raise BenchError(
            f"stale: converted from another model.keras (its metadata differs from "
            f"model.json); re-run `edgeship convert {path.parent}/model.keras --out "
            f"{path.parent}`. Received: path={path}, model={meta.get('model')}, "
            f"run model={run_meta.get('model')}"
        )
    source = (meta or {}).get("source_model") or {}
    if reference_sha is not None and source.get("sha256") and source["sha256"] != reference_sha:
        raise BenchError(
            f"stale: converted from another Keras file ({source.get('path')}) than the run's "
            f"desktop reference ({reference}); convert it again (edgeship convert {reference} "
            f"--quantize {mode_of(path)} --out {path.parent}) or remove it. Received: "
            f"path={path}"
        )
