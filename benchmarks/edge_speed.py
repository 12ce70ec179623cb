"""How much edge_runtime costs over the bare interpreter: `python -m benchmarks.edge_speed`.

Three figures (medians over repeats, each against its target from issue 4):
1. `EdgeClassifier.predict()` on one 28x28 uint8 image vs the raw interpreter round trip
   (`set_tensor` + `invoke` + `get_tensor` on an already-quantized input), same process,
   same model, interleaved: target <= 1.5x.
2. `predict_proba` over the 10,000 Fashion-MNIST test images vs the interpreter's own batched
   time (input resized to 10,000, one `invoke`, input already quantized): target <= 2x.
3. Cold `import edge_runtime` + model load in a fresh subprocess: target <= 0.3 s.

The model: an int8 (int8 input and output) tutorial MLP. Pass `--model X.tflite` (a run's
`model_int8.tflite`), or let the script train one epoch of Flatten -> Dense(128) -> Dense(10)
on Fashion-MNIST and convert it with `tf.lite` (needs TensorFlow; ~30 s; `--save-model X.tflite`
keeps it for later runs). Repeat `--model` to measure several in one go: both kinds of int8
model are worth measuring, edgeship's default `--quantize int8` (float32 input and output
tensors, quantize/dequantize inside: the wrapper converts pixels to float32) and
`--quantize int8 --int8-io` (int8 tensors: the wrapper's byte paths), e.g.
`python -m benchmarks.edge_speed --model runs/mlp/model_int8.tflite --model io/model_int8.tflite`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(data_dir: Path = DATA_DIR):
    """(x_train, y_train, x_test, y_test): uint8 NHWC images and labels."""
    def f(name: str) -> Path:
        gz = data_dir / f"{name}.gz"
        return gz if gz.exists() else data_dir / name

    x_train = _idx(f("train-images-idx3-ubyte"))[..., None]
    y_train = _idx(f("train-labels-idx1-ubyte")).astype(np.int64)
    x_test = _idx(f("t10k-images-idx3-ubyte"))[..., None]
    y_test = _idx(f("t10k-labels-idx1-ubyte")).astype(np.int64)
    return x_train, y_train, x_test, y_test


def build_int8_mlp(out: Path, x_train: np.ndarray, y_train: np.ndarray) -> Path:
    """Train the tutorial MLP for one epoch and convert it to full int8 (int8 I/O)."""
    import keras
    import tensorflow as tf

    from edge_runtime.metadata import embed_metadata

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    xf = x_train.astype(np.float32) / 255.0
    model.fit(xf, y_train, epochs=1, batch_size=32, verbose=0)
    export = out / "export"
    model.export(
        str(export), verbose=False, input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)]
    )
    conv = tf.lite.TFLiteConverter.from_saved_model(str(export))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in xf[:500])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    meta = {
        "schema_version": 1,
        "model": "mlp",
        "class_names": [str(i) for i in range(10)],
        "input": {"shape": [28, 28, 1], "dtype": "float32", "scale": 1 / 255.0, "offset": 0.0,
                  "color_mode": "grayscale", "background": "dark"},
        "quantization": {"mode": "int8", "int8_io": True},
    }
    path = out / "model_int8.tflite"
    path.write_bytes(embed_metadata(conv.convert(), meta))
    return path


def _raw_interpreter(model: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    return interp, interp.get_input_details()[0], interp.get_output_details()[0]


def bench_single(model: Path, image: np.ndarray, calls: int, repeats: int) -> dict:
    """Per-call microseconds: predict(one uint8 image) vs the bare round trip."""
    from edge_runtime import EdgeClassifier

    clf = EdgeClassifier.load(model)
    interp, inp, out = _raw_interpreter(model)
    q = clf._lut[image][None, ..., None]  # the tensor predict() feeds, quantized outside
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
    i_in, i_out = inp["index"], out["index"]

    def raw() -> None:
        set_tensor(i_in, q)
        invoke()
        get_tensor(i_out)

    def ours() -> None:
        clf.predict(image)

    for fn in (raw, ours):
        for _ in range(200):
            fn()
    per = {"raw": [], "predict": []}
    clock = time.perf_counter
    for _ in range(repeats):  # interleaved, so background load hits both alike
        for key, fn in (("raw", raw), ("predict", ours)):
            t0 = clock()
            for _ in range(calls):
                fn()
            per[key].append((clock() - t0) / calls * 1e6)
    raw_us, ours_us = statistics.median(per["raw"]), statistics.median(per["predict"])
    return {"raw_us": round(raw_us, 2), "predict_us": round(ours_us, 2),
            "ratio": round(ours_us / raw_us, 3), "target": 1.5, "calls": calls,
            "repeats": repeats}


def bench_batch(model: Path, x: np.ndarray, y: np.ndarray, repeats: int) -> dict:
    """Seconds for all of `x`: predict_proba vs one batched interpreter invoke."""
    from edge_runtime import EdgeClassifier

    clf = EdgeClassifier.load(model)
    interp, inp, out = _raw_interpreter(model)
    n = len(x)
    interp.resize_tensor_input(inp["index"], [n, 28, 28, 1], strict=True)
    interp.allocate_tensors()
    q = clf._lut[x]

    def raw() -> np.ndarray:
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        return interp.get_tensor(out["index"])

    accuracy = float((clf.predict_proba(x).argmax(1) == y).mean())
    agree = float((raw().argmax(1) == clf.predict_proba(x).argmax(1)).mean())
    per = {"raw": [], "predict_proba": []}
    for _ in range(repeats):
        for key, fn in (("raw", raw), ("predict_proba", lambda: clf.predict_proba(x))):
            t0 = time.perf_counter()
            fn()
            per[key].append(time.perf_counter() - t0)
    raw_s, ours_s = statistics.median(per["raw"]), statistics.median(per["predict_proba"])
    return {"images": n, "raw_s": round(raw_s, 4), "predict_proba_s": round(ours_s, 4),
            "ratio": round(ours_s / raw_s, 3), "target": 2.0, "batch_size": clf.batch_size,
            "accuracy": round(accuracy, 4), "agreement_with_raw": agree, "repeats": repeats}


_COLD = """
import time
t0 = time.perf_counter()
import edge_runtime
clf = edge_runtime.EdgeClassifier.load({model!r})
t1 = time.perf_counter()
import sys
print(t1 - t0, 'tensorflow' in sys.modules)
"""


def bench_cold(model: Path, repeats: int) -> dict:
    """Fresh-process `import edge_runtime` + load (in-process clock) and whole-process wall."""
    inside, wall = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _COLD.format(model=str(model))],
            capture_output=True, text=True, check=True,
        )
        wall.append(time.perf_counter() - t0)
        seconds, tf_loaded = proc.stdout.split()
        assert tf_loaded == "False", "edge_runtime imported TensorFlow"
        inside.append(float(seconds))
    return {"import_and_load_s": round(statistics.median(inside), 4),
            "process_wall_s": round(statistics.median(wall), 4), "target": 0.3,
            "repeats": repeats}


def _report(results: dict, header: bool) -> None:
    s, b, c = results["single"], results["batch"], results["cold"]
    if header:
        print(f"== {results['model']}")
    print(f"predict(1 image):   {s['predict_us']:.1f} us vs raw round trip {s['raw_us']:.1f} us"
          f" -> {s['ratio']:.2f}x (target <= 1.5x)")
    print(f"predict_proba(10k): {b['predict_proba_s'] * 1e3:.1f} ms vs raw batched "
          f"{b['raw_s'] * 1e3:.1f} ms -> {b['ratio']:.2f}x (target <= 2x); "
          f"accuracy {b['accuracy']:.4f}")
    print(f"cold import+load:   {c['import_and_load_s']:.3f} s in process "
          f"({c['process_wall_s']:.3f} s whole process) (target <= 0.3 s)")
    print(json.dumps(results), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them (and a JSON line)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.edge_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append",
                        help="an int8 .tflite MLP; repeat for several (else one is built)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--save-model", type=Path,
                        help="keep the built model here (reuse it later with --model)")
    args = parser.parse_args(argv)

    x_train, y_train, x_test, y_test = load_fashion_mnist(args.data_dir)
    all_results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model or [build_int8_mlp(Path(tmp), x_train, y_train)]
        if args.save_model and not args.model:
            from edge_runtime.files import atomic_write_bytes

            atomic_write_bytes(args.save_model, models[0].read_bytes())
        for model in models:
            results = {
                "model": str(model) if args.model else "built: 1-epoch tutorial MLP, int8 I/O",
                "single": bench_single(model, x_test[0, :, :, 0], args.calls, args.repeats),
                "batch": bench_batch(model, x_test, y_test, max(3, args.repeats // 2)),
                "cold": bench_cold(model, max(3, args.repeats // 2)),
            }
            all_results.append(results)
            _report(results, header=len(models) > 1)
    if args.json:
        args.json.write_text(json.dumps(all_results[0] if len(all_results) == 1 else all_results,
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
