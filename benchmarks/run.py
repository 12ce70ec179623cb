"""`run_bench`: measure the Keras reference and every `.tflite` of a run directory.

TFLite models run through `edge_runtime.EdgeClassifier` (the code that ships); Keras
(TensorFlow) is imported lazily and only when the run has a `model.keras`. Order: test set,
TFLite variants (before TensorFlow is loaded into this process), Keras, then the memory
probes (one subprocess per model, in parallel, while this process only waits), then budgets
and the report files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.device import load_device_results, match_device
from benchmarks.errors import BenchError, BudgetError
from benchmarks.measure import (
    CLOCK,
    classification_stats,
    latency_summary,
    throughput_ips,
    time_calls,
    timer_overhead_ns,
)
from benchmarks.options import BenchOptions
from benchmarks.testdata import spread_indices
from edge_runtime.errors import EdgeshipError
from edge_runtime.native_log import filtered_native_stderr
from edge_runtime.scores import as_probabilities

SCHEMA_VERSION = 1
MODE_ORDER = ("float32", "dynamic", "float16", "int8", "int16x8")
LATENCY_IMAGES = 100  # batch-1 calls cycle over this many distinct test images
ACCURACY_BATCH = 1024

# progress(description, completed, total)
ProgressCallback = Callable[[str, int, int], None]


def _mode_of(path: Path) -> str:
    stem = path.stem
    return stem.removeprefix("model_") if stem.startswith("model_") else stem


def find_models(run_dir: Path, options: BenchOptions) -> tuple[Path | None, list[Path]]:
    """`model.keras` (or None) and the selected `.tflite` files, in the modes' order."""
    if not run_dir.is_dir():
        raise BenchError(
            f"The run directory does not exist or is not a directory. Train and convert first "
            f"(edgeship train --out RUN; edgeship convert RUN/model.keras --out RUN). "
            f"Received: path={run_dir}"
        )
    keras_path = run_dir / "model.keras"
    tflites = sorted(
        run_dir.glob("*.tflite"),
        key=lambda p: (
            MODE_ORDER.index(_mode_of(p)) if _mode_of(p) in MODE_ORDER else len(MODE_ORDER),
            p.name,
        ),
    )
    if options.keras is not None:
        keras_path = Path(options.keras)
        if not keras_path.is_file():
            raise BenchError(
                f"--keras names no Keras model file. Received: keras={keras_path}"
            )
    if not keras_path.is_file() and not tflites:
        found = sorted(p.name for p in run_dir.iterdir())[:10]
        raise BenchError(
            "No models to benchmark: expected model.keras and/or model_<mode>.tflite. Run "
            f"`edgeship convert RUN/model.keras --out RUN` first. Received: path={run_dir}, "
            f"files={found}"
        )
    if options.only:
        selected = [p for p in tflites if options.selects(_mode_of(p), p.name)]
        known = {_mode_of(p) for p in tflites} | {p.name for p in tflites}
        known |= {p.stem for p in tflites}
        unknown = [o for o in options.only if o not in known]
        if unknown:
            raise BenchError(
                f"--only names models that are not in the run directory. Available: "
                f"{sorted(_mode_of(p) for p in tflites)}. Received: --only={','.join(options.only)}"
            )
        tflites = selected
    if not keras_path.is_file():
        return recorded_source_model(tflites), tflites
    return keras_path, tflites


def recorded_source_model(tflites: list[Path]) -> Path | None:
    """The Keras file a `.tflite` was converted from (`source_model` in its metadata), if it
    is still there with the same sha256: the desktop reference of a model converted from a
    file outside the run."""
    import hashlib

    from edge_runtime.metadata import read_metadata

    for path in tflites:
        try:
            source = (read_metadata(path, sidecar=False) or {}).get("source_model") or {}
        except EdgeshipError:
            continue
        keras_path = Path(source.get("path") or "")
        if (
            source.get("path")
            and keras_path.is_file()
            and hashlib.sha256(keras_path.read_bytes()).hexdigest() == source.get("sha256")
        ):
            return keras_path
    return None


def _no_keras_note(tflites: list[Path]) -> str:
    """Why the report has no Keras row: none in the run, or the recorded source is gone."""
    from edge_runtime.metadata import read_metadata

    for path in tflites:
        try:
            source = (read_metadata(path, sidecar=False) or {}).get("source_model") or {}
        except EdgeshipError:
            continue
        if not source.get("path"):
            continue
        keras_path = Path(source["path"])
        if not keras_path.is_file():
            what = "is gone"
        elif hashlib.sha256(keras_path.read_bytes()).hexdigest() != source.get("sha256"):
            what = "has changed since (another sha256)"
        else:
            continue
        return (
            f"the Keras model {path.name} was converted from {what}: {keras_path}. No Keras "
            "row, no agreement figures; name the desktop model with --keras PATH"
        )
    return "no model.keras in the run: no agreement figures"


def _read_run_metadata(
    run_dir: Path, tflites: list[Path], options: BenchOptions | None = None
) -> dict[str, Any]:
    from train.training import read_run_metadata

    meta = read_run_metadata(run_dir)
    if meta is not None:
        return meta
    from edge_runtime.metadata import read_metadata

    for path in tflites:
        try:
            meta = read_metadata(path)
        except EdgeshipError:
            continue
        if meta:
            return meta
    if options is not None and options.test_data is not None and tflites:
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


def _test_set(meta: dict[str, Any], options: BenchOptions):
    """The test set: `--test-data` in the model's class order, else the run's own."""
    if options.test_data is None:
        data, x, y, notes = load_test_set(meta, options.limit)
        if options.labels is not None:  # the run's own test set, named by --labels
            data = dataclasses.replace(data, class_names=tuple(meta["class_names"]))
        return data, x, y, notes
    from benchmarks.testdata import load_test_data

    block = meta.get("input") or {}
    data = load_test_data(
        options.test_data,
        meta["class_names"],
        tuple(block["shape"]),
        block.get("resize", "stretch"),
    )
    x, y = data.x_test, data.y_test
    if options.limit is not None:  # a folder read class by class: some of every class
        keep = np.sort(spread_indices(y, options.limit))
        x, y = x[keep], y[keep]
    return data, x, y, []


def load_test_set(meta: dict[str, Any], limit: int | None):
    """The test images (uint8 NHWC), labels and class names named by the run's metadata."""
    from train.datasets import FASHION_MNIST, load_dataset

    info = meta.get("dataset") or {}
    name, source = info.get("name"), info.get("source")
    if not info and meta.get("model") == "custom":  # converted from the user's own Keras file
        calibrated = (meta.get("quantization") or {}).get("calibration_source")
        raise BenchError(
            "These models were converted from your own Keras model: there is no test set of "
            "their own to fall back to (Fashion-MNIST would fit none of them). Pass "
            "--test-data DIR (one folder per class) or FILE.npz"
            + (f", e.g. the photos they were calibrated on: {calibrated}" if calibrated else "")
            + f". Received: model={meta.get('model')}, dataset=none"
        )
    if name == FASHION_MNIST or (name is None and source is None):
        data_dir = source if source and Path(source).is_dir() else None
        data = load_dataset(FASHION_MNIST, data_dir)
    elif source and Path(source).is_dir():
        data = load_dataset(source)
    else:
        raise BenchError(
            "The run's test set is not available: its image folder is gone. Restore it or "
            f"retrain. Received: dataset={name}, source={source}"
        )
    x, y = data.x_test, data.y_test
    if limit is not None:
        x, y = x[:limit], y[:limit]
    notes = []
    if info.get("sha256") and data.sha256 and info["sha256"] != data.sha256:
        notes.append(
            f"dataset content differs from the one the model was trained with "
            f"(sha256 {data.sha256[:12]}... vs {info['sha256'][:12]}...)"
        )
    return data, x, y, notes


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_same_source(path: Path, run_meta: dict[str, Any] | None) -> None:
    """Raise `BenchError` if `path` was converted from another model.keras than the run's."""
    from edge_runtime.metadata import read_metadata, same_source

    if run_meta is None:
        return
    meta = read_metadata(path, sidecar=False)
    if meta is not None and not same_source(run_meta, meta):
        raise BenchError(
            f"stale: converted from another model.keras (its metadata differs from "
            f"model.json); re-run `edgeship convert {path.parent}/model.keras --out "
            f"{path.parent}`. Received: path={path}, model={meta.get('model')}, "
            f"run model={run_meta.get('model')}"
        )


def check_recorded_source(path: Path, reference: Path | None, reference_sha: str | None) -> None:
    """Raise `BenchError` if `path` records a source Keras file (`convert` of a file outside
    the run) other than the run's desktop reference: a leftover of another model's conversion
    into the same folder, which would be compared with the wrong Keras model."""
    from edge_runtime.metadata import read_metadata

    if reference_sha is None:
        return
    source = (read_metadata(path, sidecar=False) or {}).get("source_model") or {}
    if source.get("sha256") and source["sha256"] != reference_sha:
        raise BenchError(
            f"stale: converted from another Keras file ({source.get('path')}) than the run's "
            f"desktop reference ({reference}); convert it again (edgeship convert {reference} "
            f"--quantize {_mode_of(path)} --out {path.parent}) or remove it. Received: "
            f"path={path}"
        )


def _measure_tflite(path: Path, x: np.ndarray, y: np.ndarray, options: BenchOptions) -> dict:
    from edge_runtime.classifier import EdgeClassifier

    t0 = time.perf_counter()
    with filtered_native_stderr():  # the runtime's one-off "Created ... XNNPACK" line
        clf = EdgeClassifier.load(path, num_threads=options.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    meta = clf.metadata or {}
    if clf.input_shape != tuple(x.shape[1:]):
        raise BenchError(
            f"The model's input does not match the test images. Received: path={path}, "
            f"input={list(clf.input_shape)}, images={list(x.shape[1:])}"
        )
    probs = np.concatenate(
        [clf.predict_proba(x[i : i + ACCURACY_BATCH]) for i in range(0, len(x), ACCURACY_BATCH)]
    )
    singles = [x[i : i + 1] for i in range(min(LATENCY_IMAGES, len(x)))]
    samples = time_calls(clf.predict_proba, singles, options.runs, options.warmup)
    batch = np.resize(x, (options.batch, *x.shape[1:]))
    clf_b = EdgeClassifier.load(path, num_threads=options.threads, batch_size=options.batch)
    ips = throughput_ips(clf_b.predict_proba, batch, options.batch)
    quant = (meta.get("quantization") or {}).get("mode") or _mode_of(path)
    float_layers = list((meta.get("quantization") or {}).get("float_layers") or [])
    if float_layers:  # convert --fallback kept these in float
        n = len(float_layers)
        quant = f"{quant}, {n} layer{'s' if n > 1 else ''} float"
    return {
        "name": _mode_of(path),
        "format": "tflite",
        "quantization": quant,
        "float_layers": float_layers,
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "load_ms": round(load_ms, 3),
        "latency_method": "EdgeClassifier.predict_proba (uint8 pixels in, probabilities out)",
        "latency_samples_us": samples * 1e6,
        "throughput_ips": ips,
        "backend": f"{clf.backend.name} {clf.backend.version}",
        "_probs": probs,
        "_num_classes": clf.num_classes,
    }


def _measure_keras(path: Path, x: np.ndarray, meta: dict, options: BenchOptions) -> dict:
    from train.quiet import import_keras

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = import_keras()  # without TensorFlow's native start-up lines on the terminal
    import tensorflow as tf

    if options.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(options.threads)
            tf.config.threading.set_inter_op_parallelism_threads(options.threads)
        except RuntimeError:  # TensorFlow already initialised in this process
            pass
    inp = meta.get("input") or {}
    scale = np.float32(inp.get("scale", 1.0 / 255.0))
    offset = np.float32(inp.get("offset", 0.0))

    def to_input(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) * scale + offset

    t0 = time.perf_counter()
    model = keras.models.load_model(path, compile=False)
    load_ms = (time.perf_counter() - t0) * 1e3
    xf = to_input(x)
    shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
    if len(shape) == 2 and xf.shape[1:] == (*shape, 1):  # a (batch, H, W) grayscale model
        xf = xf[..., 0]
    if len(shape) != xf.ndim - 1 or any(
        d is not None and d != have for d, have in zip(shape, xf.shape[1:], strict=False)
    ):  # a fully convolutional model would even run, on another model's images
        raise BenchError(
            f"The Keras model takes images of {shape}, the run's models {tuple(x.shape[1:])}: "
            f"it is another model. Name the one they were converted from with --keras. "
            f"Received: keras={path}"
        )
    # logits get a softmax, one sigmoid unit becomes [1 - p, p] (edge_runtime.scores)
    probs = as_probabilities(model.predict(xf, batch_size=ACCURACY_BATCH, verbose=0))
    spec = tf.TensorSpec([None, *xf.shape[1:]], tf.float32)
    compiled = tf.function(lambda a: model(a, training=False), input_signature=[spec])
    singles = [xf[i : i + 1] for i in range(min(LATENCY_IMAGES, len(xf)))]
    samples = time_calls(lambda a: compiled(a).numpy(), singles, options.runs, options.warmup)
    predict_samples = time_calls(
        lambda a: model.predict(a, verbose=0),
        singles,
        options.predict_runs,
        min(options.warmup, 3),
    )
    batch = np.resize(xf, (options.batch, *xf.shape[1:]))
    ips = throughput_ips(lambda a: compiled(a).numpy(), batch, options.batch)
    return {
        "name": "keras",
        "format": "keras",
        "quantization": "none (float32)",
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "load_ms": round(load_ms, 3),
        "latency_method": "compiled tf.function call (float32 array in, .numpy() out)",
        "latency_samples_us": samples * 1e6,
        "latency_model_predict_us": latency_summary(predict_samples),
        "model_predict_runs": options.predict_runs,
        "throughput_ips": ips,
        "backend": f"tensorflow {tf.__version__} / keras {keras.__version__}",
        "_probs": probs,
        "_num_classes": probs.shape[1],
    }


def _memory_probes(models: list[dict], options: BenchOptions) -> dict[str, dict]:
    """Run `python -m benchmarks.memprobe` for each model, all at once; name -> result."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = {}
    for m in models:
        cmd = [sys.executable, "-m", "benchmarks.memprobe", m["path"]]
        cmd += ["--batch", str(options.batch)]
        if options.threads:
            cmd += ["--threads", str(options.threads)]
        procs[m["name"]] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        try:
            results[name] = json.loads(out.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            results[name] = {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return results


def host_info(backend: str | None) -> dict[str, Any]:
    """Machine, CPU, Python and library versions of this host."""
    import importlib.metadata as md

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    for dist in ("edgeship", "tensorflow", "keras", "ai-edge-litert", "tflite-runtime"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "tflite_backend": backend,
        "versions": versions,
    }


def check_budgets(models: list[dict], keras_accuracy: float | None, options: BenchOptions) -> dict:
    """Each budget against each measured TFLite model; `passed` is False if any is missed."""
    checks = []
    for m in models:
        if m["format"] != "tflite":
            continue
        wanted = [
            ("min_accuracy", options.min_accuracy, m["accuracy"], ">="),
            (
                "max_accuracy_drop",
                options.max_accuracy_drop,
                None if keras_accuracy is None else round(keras_accuracy - m["accuracy"], 6),
                "<=",
            ),
            ("max_latency_us", options.max_latency_us, m["latency_us"]["p50"], "<="),
        ]
        for budget, limit, value, op in wanted:
            if limit is None:
                continue
            if value is None:
                ok, note = False, "no Keras reference to compare with"
            else:
                ok = value >= limit if op == ">=" else value <= limit
                note = None
            checks.append(
                {"model": m["name"], "budget": budget, "limit": limit, "value": value, "op": op,
                 "ok": ok, "note": note}
            )
    return {
        "min_accuracy": options.min_accuracy,
        "max_accuracy_drop": options.max_accuracy_drop,
        "max_latency_us": options.max_latency_us,
        "checks": checks,
        "passed": all(c["ok"] for c in checks),
    }


def run_bench(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: BenchOptions | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Benchmark a run directory; write report.json/.md/.csv and plots to `out_dir`; return it.

    Models that fail are listed under `failed` and the others are still measured and written;
    budgets are checked into `budgets`. Call `raise_for_outcome(report)` to turn failures into
    `BenchError` (exit 2) and missed budgets into `BudgetError` (exit 1).
    """
    options = options or BenchOptions()
    started = time.perf_counter()
    run = Path(run_dir)
    out = Path(out_dir)
    keras_path, tflites = find_models(run, options)
    device_entries = load_device_results(options.device) if options.device else None
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out must be a directory. Received: out={out}")
    meta = _read_run_metadata(run, tflites, options)
    run_json = meta if (run / "model.json").is_file() else None  # else meta is a .tflite's
    if options.labels is not None:
        from edge_runtime.labels import read_labels, resolve_labels

        known = meta.get("class_names")
        names = resolve_labels(options.labels, len(known)) if known else read_labels(options.labels)
        meta = {**meta, "class_names": list(names)}
    total = 4 + len(tflites) + (keras_path is not None)
    done = 0

    def step(text: str) -> None:
        nonlocal done
        if progress:
            progress(text, done, total)
        done += 1

    step("loading the test set")
    data, x, y, notes = _test_set(meta, options)
    timer = timer_overhead_ns()
    measured: list[dict] = []
    failed: list[dict] = []
    reference_sha = None  # the recorded source's, when that is the reference (not --keras)
    if keras_path is not None and options.keras is None and keras_path != run / "model.keras":
        reference_sha = hashlib.sha256(keras_path.read_bytes()).hexdigest()
    for path in tflites:
        step(f"measuring {path.name}")
        try:
            check_same_source(path, run_json)
            check_recorded_source(path, keras_path, reference_sha)
            measured.append(_measure_tflite(path, x, y, options))
        except (EdgeshipError, ValueError, RuntimeError) as err:
            failed.append({"name": _mode_of(path), "path": str(path), "error": _first_line(err)})
    keras_entry = None
    if keras_path is not None:
        step("measuring model.keras (TensorFlow)")
        try:
            keras_entry = _measure_keras(keras_path, x, meta, options)
        except Exception as err:  # noqa: BLE001 - Keras raises anything on a bad file
            failed.append({"name": "keras", "path": str(keras_path), "error": _first_line(err)})
    else:
        notes.append(_no_keras_note(tflites))
    models = ([keras_entry] if keras_entry else []) + measured
    reference = keras_entry["_probs"] if keras_entry else None
    num_classes = len(data.class_names)
    for m in list(models):
        if m["_num_classes"] != num_classes:
            models.remove(m)
            failed.append({
                "name": m["name"], "path": m["path"],
                "error": f"the model has {m['_num_classes']} outputs, the test set "
                         f"{num_classes} classes",
            })
            continue
        m.update(classification_stats(m["_probs"], y, num_classes, reference))
        m["latency_us"] = latency_summary(m["latency_samples_us"] / 1e6)
    step("measuring peak memory (one subprocess per model)")
    memory = _memory_probes(models, options) if options.memory and models else {}
    for m in models:
        probe = memory.get(m["name"], {})
        m["peak_rss_mb"] = probe.get("peak_rss_mb")
        m["bare_python_rss_mb"] = probe.get("start_rss_mb")
        m["baseline_rss_mb"] = probe.get("baseline_rss_mb")
        m["model_rss_mb"] = probe.get("model_rss_mb")
        if "error" in probe:
            notes.append(f"memory probe of {m['name']} failed: {probe['error']}")
        m["device"] = None
        if device_entries is not None and m["format"] == "tflite":
            m["device"] = match_device(device_entries, Path(m["path"]).name)
    keras_accuracy = keras_entry["accuracy"] if keras_entry in models else None
    budgets = check_budgets(models, keras_accuracy, options)
    backend = next((m["backend"] for m in models if m["format"] == "tflite"), None)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": str(run),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(backend),
        "dataset": {
            "name": data.name,
            "source": data.source,
            "sha256": data.sha256,
            "test_size": len(data.x_test),
            "images": len(x),
            "limit": options.limit,
            "class_names": list(data.class_names),
        },
        "settings": {
            "runs": options.runs,
            "warmup": options.warmup,
            "threads": options.threads,
            "batch": options.batch,
            "predict_runs": options.predict_runs,
            "only": list(options.only),
            "latency_images": min(LATENCY_IMAGES, len(x)),
        },
        "timer": {"clock": CLOCK, **timer},
        "models": models,
        "failed": failed,
        "budgets": budgets,
        "device": {"file": str(options.device), "entries": device_entries}
        if device_entries is not None
        else None,
        "notes": notes,
    }
    step("writing the report and plots")
    from benchmarks.report import write_reports

    report["_started"] = started
    clean_report = write_reports(report, out, x=x, y=y, plots=options.plots)
    step("done")
    return clean_report


def raise_for_outcome(report: dict[str, Any]) -> None:
    """Raise `BenchError` (exit 2) for unmeasured models, else `BudgetError` (exit 1) for misses."""
    missed = [c for c in report["budgets"]["checks"] if not c["ok"]]
    budget_text = "; ".join(
        f"{c['model']}: {c['budget']} {c['value']} (limit {c['op']} {c['limit']})"
        + (f" ({c['note']})" if c.get("note") else "")
        for c in missed
    )
    if report["failed"]:
        bad = "; ".join(f"{f['path']}: {f['error']}" for f in report["failed"])
        extra = f" Budgets also missed: {budget_text}." if missed else ""
        raise BenchError(
            f"{len(report['failed'])} model(s) could not be measured (the report covers the "
            f"others). Fix or remove them and re-run. Received: {bad}.{extra}"
        )
    if missed:
        raise BudgetError(f"budget not met: {budget_text}")
