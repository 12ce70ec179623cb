"""Measure one model: a `.tflite` through `EdgeClassifier`, the Keras reference through
TensorFlow (imported lazily), and each one's peak memory in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime.native_log import filtered_native_stderr
from edge_runtime.scores import as_probabilities
from edgeship.bench.errors import BenchError
from edgeship.bench.measure import latency_summary, throughput_ips, time_calls
from edgeship.bench.models import mode_of
from edgeship.bench.options import BenchOptions

LATENCY_IMAGES = 100  # batch-1 calls cycle over this many distinct test images
ACCURACY_BATCH = 1024
PHOTO_IMAGES = 50  # photo -> answer: one call on each of the first 50 test photos


def _singles(x: np.ndarray) -> list[np.ndarray]:
    """The batch-1 inputs the latency calls cycle over."""
    return [x[i : i + 1] for i in range(min(LATENCY_IMAGES, len(x)))]


def photo_latency(clf, photos: list[Path]) -> dict:
    """Photo -> answer from the files on disk (read, decode to size, preprocess, invoke,
    postprocess: `edge_runtime.image.stages.classify_photo`, what `serve` runs), one call per
    photo after one untimed call: microseconds p50 and p99, and how many photos."""
    from edge_runtime.image.stages import classify_photo

    chosen = photos[:PHOTO_IMAGES]
    classify_photo(clf, chosen[0])
    samples = np.empty(len(chosen), dtype=np.float64)
    for i, path in enumerate(chosen):
        t0 = time.perf_counter()
        classify_photo(clf, path)
        samples[i] = time.perf_counter() - t0
    p50, p99 = np.percentile(samples * 1e6, [50, 99])
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "photos": len(chosen)}


def measure_tflite(
    path: Path, x: np.ndarray, options: BenchOptions, photos: list[Path] | None = None
) -> dict:
    """One `.tflite`'s report row (probabilities under `_probs`): size, load time, latency
    samples and throughput through `EdgeClassifier`, the code that ships; with `photos`
    (`--test-data DIR`), the photo -> answer latency from the files as well."""
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
    samples = time_calls(clf.predict_proba, _singles(x), options.runs, options.warmup)
    batch = np.resize(x, (options.batch, *x.shape[1:]))
    clf_b = EdgeClassifier.load(path, num_threads=options.threads, batch_size=options.batch)
    ips = throughput_ips(clf_b.predict_proba, batch, options.batch)
    quantization = meta.get("quantization") or {}
    quant = quantization.get("mode") or mode_of(path)
    float_layers = list(quantization.get("float_layers") or [])
    if float_layers:  # convert --fallback kept these in float
        n = len(float_layers)
        quant = f"{quant}, {n} layer{'s' if n > 1 else ''} float"
    return {
        "name": mode_of(path),
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
        "photo_latency_us": photo_latency(clf, photos) if photos else None,
        "_probs": probs,
    }


def measure_keras(path: Path, x: np.ndarray, meta: dict, options: BenchOptions) -> dict:
    """The Keras reference's report row, fed the pixels scaled as the runtime scales them."""
    from edgeship.train.quiet import import_keras

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
    scale = np.asarray(inp.get("scale", 1.0 / 255.0), np.float32)  # a float, or per channel
    offset = np.asarray(inp.get("offset", 0.0), np.float32)
    t0 = time.perf_counter()
    model = keras.models.load_model(path, compile=False)
    load_ms = (time.perf_counter() - t0) * 1e3
    xf = x.astype(np.float32) * scale + offset
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

    def call(a: np.ndarray) -> np.ndarray:
        return compiled(a).numpy()

    singles = _singles(xf)
    samples = time_calls(call, singles, options.runs, options.warmup)
    predict_samples = time_calls(
        lambda a: model.predict(a, verbose=0),
        singles,
        options.predict_runs,
        min(options.warmup, 3),
    )
    batch = np.resize(xf, (options.batch, *xf.shape[1:]))
    ips = throughput_ips(call, batch, options.batch)
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
    }


def measure_torch(spec: str, x: np.ndarray, meta: dict, options: BenchOptions) -> dict:
    """The PyTorch reference's report row (`FILE.pt2` or `FILE.py:FUNCTION`, eager on the CPU,
    `torch.inference_mode`), fed the pixels scaled as the runtime scales them."""
    import torch

    from edgeship.convert.torch_source import (
        load_torch_module,
        split_torch_spec,
        torch_probabilities,
    )

    if options.threads:
        torch.set_num_threads(options.threads)
    inp = meta.get("input") or {}
    scale = np.asarray(inp.get("scale", 1.0 / 255.0), np.float32)  # a float, or per channel
    offset = np.asarray(inp.get("offset", 0.0), np.float32)
    t0 = time.perf_counter()
    module, shape = load_torch_module(spec)
    load_ms = (time.perf_counter() - t0) * 1e3
    xf = x.astype(np.float32) * scale + offset
    if tuple(xf.shape[1:]) != tuple(shape):
        raise BenchError(
            f"The PyTorch model takes images of {shape}, the run's models "
            f"{tuple(x.shape[1:])}: it is another model. Received: model={spec}"
        )
    probs = torch_probabilities(module, xf)
    nchw = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))

    def call(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(a)).numpy()

    samples = time_calls(call, _singles(nchw), options.runs, options.warmup)
    batch = np.ascontiguousarray(np.resize(nchw, (options.batch, *nchw.shape[1:])))
    ips = throughput_ips(call, batch, options.batch)
    found = split_torch_spec(spec)
    assert found is not None  # load_torch_module above raised otherwise
    path = found[0]
    return {
        "name": "torch",
        "format": "torch",
        "quantization": "none (float32)",
        "path": spec,
        "size_bytes": path.stat().st_size,
        "load_ms": round(load_ms, 3),
        "latency_method": "eager module call under torch.inference_mode (float32 NCHW in)",
        "latency_samples_us": samples * 1e6,
        "throughput_ips": ips,
        "backend": f"torch {torch.__version__} (eager, CPU, {torch.get_num_threads()} threads)",
        "_probs": probs,
    }


def memory_probes(models: list[dict], options: BenchOptions) -> dict[str, dict]:
    """Run `python -m edgeship.bench.memprobe` for each model, all at once; name -> result."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs = {}
    for m in models:
        cmd = [sys.executable, "-m", "edgeship.bench.memprobe", m["path"]]
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
