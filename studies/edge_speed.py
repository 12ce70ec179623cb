"""How much edge_runtime costs over the bare interpreter: `python -m studies.edge_speed`.

Three figures (medians over repeats, each against its target from issue 12):
1. `EdgeClassifier.predict()` on one 28x28 uint8 image vs the raw interpreter round trip
   (`set_tensor` + `invoke` + `get_tensor` on an already-quantized input), same process,
   same model, interleaved: target <= 2.5x on the int8 MLP (where the fixed cost of any
   wrapper dominates a ~2 us call), <= 1.25x on the CNN. Beside it, the floor: a wrapper that
   only checks the array, quantizes it through a table and takes a lock (no output handling).
2. `predict_proba` over the 10,000 Fashion-MNIST test images vs the interpreter's own batched
   time (input resized to 10,000, one `invoke`, input already quantized): target <= 1x.
3. Cold `import edge_runtime` + model load in a fresh subprocess: target <= 0.3 s.

The model: an int8 (int8 input and output) tutorial MLP. Pass `--model X.tflite` (a run's
`model_int8.tflite`), or let the script train one epoch of the tutorial MLP on Fashion-MNIST
with edgeship's train and convert it to int8 with `--int8-io` (needs TensorFlow; ~30 s;
`--save-model X.tflite` keeps it for later runs). Repeat `--model` to measure several in one
go: both kinds of int8 model are worth measuring, edgeship's default `--quantize int8`
(float32 input and output tensors, quantize/dequantize inside: the wrapper converts pixels to
float32) and
`--quantize int8 --int8-io` (int8 tensors: the wrapper's byte paths), e.g.
`python -m studies.edge_speed --model runs/mlp/model_int8.tflite --model io/model_int8.tflite`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.native_log import filtered_native_stderr

# predict() on one image over the bare round trip, per model (issue 12).
SINGLE_TARGETS = {"int8 MLP": 2.5, "CNN": 1.25}


def load_fashion_mnist(data_dir: Path | None = None):
    """(x_train, y_train, x_test, y_test): uint8 NHWC images and labels (train's loader)."""
    from edgeship.train.datasets import load_fashion_mnist as load

    data = load(data_dir)
    return data.x_train, data.y_train, data.x_test, data.y_test


def build_int8_mlp(out: Path, data_dir: Path | None = None) -> Path:
    """One epoch of the tutorial MLP (`edgeship train`), converted to int8 with int8 I/O."""
    from edgeship.convert import convert_model
    from edgeship.train import TrainConfig, train

    trained = train(TrainConfig(model="mlp", epochs=1, data_dir=data_dir), out)
    report = convert_model(trained.model_path, out, modes=("int8",), int8_io=True)
    report.raise_for_failures()
    return report.results[0].path


def _raw_interpreter(model: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    return interp, interp.get_input_details()[0], interp.get_output_details()[0]


def bench_single(
    model: Path, image: np.ndarray, calls: int, repeats: int, cpu_time: bool = False
) -> dict:
    """Per-call microseconds: predict(one uint8 image) vs the bare round trip; `cpu_time`:
    the thread's CPU time instead of the wall clock (a loaded machine's run-queue waits out)."""
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

    # The floor: what any wrapper must add to the round trip, and nothing else: a dtype and
    # shape check, uint8 pixels -> the input tensor's type through a 256-entry table, a lock.
    lock, table, shape = threading.Lock(), clf._lut, image.shape

    def floor() -> None:
        if image.dtype != np.uint8 or image.shape != shape:
            raise ValueError
        with lock:
            set_tensor(i_in, table[image][None, ..., None])
            invoke()
            get_tensor(i_out)

    timed = (("raw", raw), ("predict", ours), ("floor", floor))
    for _, fn in timed:
        for _ in range(200):
            fn()
    per = {key: [] for key, _ in timed}
    clock = time.thread_time if cpu_time else time.perf_counter
    for _ in range(repeats):  # interleaved, so background load hits all alike
        for key, fn in timed:
            t0 = clock()
            for _ in range(calls):
                fn()
            per[key].append((clock() - t0) / calls * 1e6)
    raw_us, ours_us = statistics.median(per["raw"]), statistics.median(per["predict"])
    floor_us = statistics.median(per["floor"])
    return {
        "raw_us": round(raw_us, 2),
        "predict_us": round(ours_us, 2),
        "ratio": round(ours_us / raw_us, 3),
        "target": SINGLE_TARGETS,
        "floor_us": round(floor_us, 2),
        "floor_ratio": round(floor_us / raw_us, 3),
        "calls": calls,
        "repeats": repeats,
        "clock": "cpu" if cpu_time else "wall",
    }


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
    return {
        "images": n,
        "raw_s": round(raw_s, 4),
        "predict_proba_s": round(ours_s, 4),
        "ratio": round(ours_s / raw_s, 3),
        "target": 1.0,
        "batch_size": clf.batch_size,
        "accuracy": round(accuracy, 4),
        "agreement_with_raw": agree,
        "repeats": repeats,
    }


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
            capture_output=True,
            text=True,
            check=True,
        )
        wall.append(time.perf_counter() - t0)
        seconds, tf_loaded = proc.stdout.split()
        assert tf_loaded == "False", "edge_runtime imported TensorFlow"
        inside.append(float(seconds))
    return {
        "import_and_load_s": round(statistics.median(inside), 4),
        "process_wall_s": round(statistics.median(wall), 4),
        "target": 0.3,
        "repeats": repeats,
    }


def _report(results: dict, header: bool) -> None:
    s, b, c = results["single"], results["batch"], results["cold"]
    if header:
        print(f"== {results['model']}")
    print(
        f"predict(1 image):   {s['predict_us']:.1f} us vs raw round trip {s['raw_us']:.1f} us"
        f" -> {s['ratio']:.2f}x (target <= 2.5x MLP, 1.25x CNN); "
        "a bare check+quantize+lock wrapper: "
        f"{s['floor_ratio']:.2f}x"
    )
    print(
        f"predict_proba(10k): {b['predict_proba_s'] * 1e3:.1f} ms vs raw batched "
        f"{b['raw_s'] * 1e3:.1f} ms -> {b['ratio']:.2f}x (target <= 1x); "
        f"accuracy {b['accuracy']:.4f}"
    )
    print(
        f"cold import+load:   {c['import_and_load_s']:.3f} s in process "
        f"({c['process_wall_s']:.3f} s whole process) (target <= 0.3 s)"
    )
    print(json.dumps(results), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print them (and a JSON line)."""
    parser = argparse.ArgumentParser(
        prog="python -m studies.edge_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        help="an int8 .tflite MLP; repeat for several (else one is built)",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time predict(1 image) in the thread's CPU time (a busy machine)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--save-model", type=Path, help="keep the built model here (reuse it later with --model)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # only when it builds a model

    _, _, x_test, y_test = load_fashion_mnist(args.data_dir)
    all_results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model or [build_int8_mlp(Path(tmp), args.data_dir)]
        if args.save_model and not args.model:
            from edge_runtime.files import atomic_write_bytes

            atomic_write_bytes(args.save_model, models[0].read_bytes())
        for model in models:
            # LiteRT's own "INFO: Created ... XNNPACK delegate" line stays off the terminal.
            with filtered_native_stderr():
                single = bench_single(
                    model, x_test[0, :, :, 0], args.calls, args.repeats, args.cpu_time
                )
                batch = bench_batch(model, x_test, y_test, max(3, args.repeats // 2))
            results = {
                "model": str(model) if args.model else "built: 1-epoch tutorial MLP, int8 I/O",
                "single": single,
                "batch": batch,
                "cold": bench_cold(model, max(3, args.repeats // 2)),
            }
            all_results.append(results)
            _report(results, header=len(models) > 1)
    if args.json:
        args.json.write_text(
            json.dumps(all_results[0] if len(all_results) == 1 else all_results, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
