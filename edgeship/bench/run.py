"""`run_bench`: measure the Keras reference and every `.tflite` of a run directory.

TFLite models run through `edge_runtime.EdgeClassifier` (the code that ships); Keras
(TensorFlow) is imported lazily and only when the run has a `model.keras`. Order: test set,
TFLite variants (before TensorFlow is loaded into this process), Keras, then the memory
probes (one subprocess per model, in parallel, while this process only waits), then budgets
and the report files. Which models: `edgeship.bench.models`; measuring one: `measure_models`.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeshipError
from edgeship.bench.budgets import check_budgets
from edgeship.bench.device import load_device_results, match_device
from edgeship.bench.errors import BenchError
from edgeship.bench.host import host_info
from edgeship.bench.measure import CLOCK, classification_stats, latency_summary, timer_overhead_ns
from edgeship.bench.measure_models import (
    LATENCY_IMAGES,
    measure_keras,
    measure_tflite,
    measure_torch,
    memory_probes,
)
from edgeship.bench.models import (
    REFERENCE_FORMATS,
    check_stale,
    find_models,
    mode_of,
    models_metadata,
    no_keras_note,
)
from edgeship.bench.options import BenchOptions
from edgeship.bench.testdata import bench_test_set, test_photos
from edgeship.train.datasets import Dataset

SCHEMA_VERSION = 1

# progress(description, completed, total)
ProgressCallback = Callable[[str, int, int], None]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _with_labels(meta: dict[str, Any], labels: str | None) -> dict[str, Any]:
    """`meta` with the class names `--labels` gives, if any."""
    if labels is None:
        return meta
    from edge_runtime.metadata.labels import read_labels, resolve_labels

    known = meta.get("class_names")
    names = resolve_labels(labels, len(known)) if known else read_labels(labels)
    return {**meta, "class_names": list(names)}


def _score(models: list[dict], y: np.ndarray, num_classes: int, failed: list[dict]) -> list[dict]:
    """The models whose outputs fit the test set, with accuracy, agreement with the Keras row
    (if any) and latency statistics; the others are appended to `failed`."""
    keras = next((m for m in models if m["format"] in REFERENCE_FORMATS), None)
    reference = keras["_probs"] if keras else None
    scored = []
    for m in models:
        outputs = m["_probs"].shape[1]
        if outputs != num_classes:
            failed.append(
                {
                    "name": m["name"],
                    "path": m["path"],
                    "error": f"the model has {outputs} outputs, the test set {num_classes} classes",
                }
            )
            continue
        m.update(classification_stats(m["_probs"], y, num_classes, reference))
        m["latency_us"] = latency_summary(m["latency_samples_us"] / 1e6)
        scored.append(m)
    return scored


def _add_memory_and_device(
    models: list[dict], options: BenchOptions, device_entries: list | None, notes: list[str]
) -> None:
    """Each model's peak memory (its probe's) and its row from the `--device` results."""
    memory = memory_probes(models, options) if options.memory and models else {}
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


def _dataset_block(data: Dataset, images: int, limit: int | None) -> dict[str, Any]:
    return {
        "name": data.name,
        "source": data.source,
        "sha256": data.sha256,
        "test_size": len(data.x_test),
        "images": images,
        "limit": limit,
        "class_names": list(data.class_names),
    }


def _settings_block(options: BenchOptions, images: int) -> dict[str, Any]:
    return {
        "runs": options.runs,
        "warmup": options.warmup,
        "threads": options.threads,
        "batch": options.batch,
        "predict_runs": options.predict_runs,
        "only": list(options.only),
        "latency_images": min(LATENCY_IMAGES, images),
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
    from edgeship.train.training import read_run_metadata

    options = options or BenchOptions()
    started = time.perf_counter()
    run = Path(run_dir)
    out = Path(out_dir)
    found = find_models(run, options)
    device_entries = load_device_results(options.device) if options.device else None
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out must be a directory. Received: out={out}")
    run_json = read_run_metadata(run)  # None: the metadata comes from a .tflite
    meta = run_json if run_json is not None else models_metadata(run, found.tflites, options)
    meta = _with_labels(meta, options.labels)
    total = 4 + len(found.tflites) + (found.keras is not None or found.torch is not None)
    done = itertools.count()  # steps started so far

    def step(text: str) -> None:
        completed = next(done)
        if progress:
            progress(text, completed, total)

    step("loading the test set")
    data, x, y, notes = bench_test_set(meta, options)
    photos = test_photos(options.test_data)  # photo -> answer, from the files on disk
    timer = timer_overhead_ns()
    models: list[dict] = []
    failed: list[dict] = []
    for path in found.tflites:
        step(f"measuring {path.name}")
        try:
            check_stale(path, run_json, found.keras or found.torch, found.recorded_sha256)
            models.append(measure_tflite(path, x, options, photos))
        except (EdgeshipError, ValueError, RuntimeError) as err:
            failed.append({"name": mode_of(path), "path": str(path), "error": _first_line(err)})
    if found.keras is not None:
        step("measuring model.keras (TensorFlow)")
        try:
            models.insert(0, measure_keras(found.keras, x, meta, options))
        except Exception as err:  # noqa: BLE001 - Keras raises anything on a bad file
            failed.append({"name": "keras", "path": str(found.keras), "error": _first_line(err)})
    elif found.torch is not None:
        step("measuring the PyTorch model (eager)")
        try:
            models.insert(0, measure_torch(found.torch, x, meta, options))
        except Exception as err:  # noqa: BLE001 - torch raises anything on a bad file
            failed.append({"name": "torch", "path": found.torch, "error": _first_line(err)})
    else:
        notes.append(no_keras_note(found.tflites))
    models = _score(models, y, len(data.class_names), failed)
    step("measuring peak memory (one subprocess per model)")
    _add_memory_and_device(models, options, device_entries, notes)
    keras_accuracy = next((m["accuracy"] for m in models if m["format"] in REFERENCE_FORMATS), None)
    backend = next((m["backend"] for m in models if m["format"] == "tflite"), None)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": str(run),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host_info(backend),
        "dataset": _dataset_block(data, len(x), options.limit),
        "settings": _settings_block(options, len(x)),
        "timer": {"clock": CLOCK, **timer},
        "models": models,
        "failed": failed,
        "budgets": check_budgets(models, keras_accuracy, options),
        "device": {"file": str(options.device), "entries": device_entries}
        if device_entries is not None
        else None,
        "notes": notes,
        "_started": started,
    }
    step("writing the report and plots")
    from edgeship.bench.report import write_reports

    clean_report = write_reports(report, out, x=x, y=y, plots=options.plots)
    step("done")
    return clean_report
