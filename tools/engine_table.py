"""The converter-vs-quantizer table of docs/convert.md: every mode of four models by both engines.

    nice python tools/engine_table.py OUT [--test N] [--runs N]

Models (trained here, briefly, on Fashion-MNIST): the tutorial MLP and the CNN (edgeship runs,
28x28x1 in, x/255 outside the model), a user-style RGB CNN with `Rescaling(1/255)` inside
(32x32x3 raw pixels), and a MobileNetV2-sized model (alpha 0.35, 96x96x3, `Rescaling` inside).
Per model, mode and engine: test accuracy, top-1 agreement with Keras, size, batch-1 p50 on
one thread, conversion seconds. Writes OUT/engines.json and OUT/engines.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("dynamic", "float16", "int8", "int16x8")


def _rgb(x: np.ndarray, size: int) -> np.ndarray:
    """(N, 28, 28, 1) uint8 -> (N, size, size, 3) float32 raw pixels."""
    import tensorflow as tf

    out = tf.image.resize(x.astype("float32"), (size, size)).numpy()
    return np.repeat(out, 3, axis=-1).astype("float32")


def _models(
    root: Path, data, test: int
) -> list[tuple[str, Path, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, model path, calibration input, first `test` test inputs, their labels) per model."""
    from edgeship.train.quiet import import_keras
    from edgeship.train.training import TrainConfig, train

    keras = import_keras()
    out = []
    x_test = data.x_test[:test].astype("float32")
    for arch, epochs, limit in (("mlp", 2, 20000), ("cnn", 1, 10000)):
        run = root / arch
        if not (run / "model.keras").exists():
            train(TrainConfig(model=arch, epochs=epochs, limit=limit, seed=0), run, data=data)
        calib = data.x_train[-500:].astype("float32") / 255.0
        out.append((arch, run / "model.keras", calib, x_test / 255.0, data.y_test[:test]))
    for name, size, build in (("rgb_rescaling", 32, _rgb_cnn), ("mobilenet", 96, _mobilenet)):
        path = root / f"{name}.keras"
        n = 6000 if name == "rgb_rescaling" else 3000
        if not path.exists():
            keras.utils.set_random_seed(0)
            model = build(keras, size)
            model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(_rgb(data.x_train[:n], size), data.y_train[:n], epochs=2, batch_size=64,
                      verbose=0)  # fmt: skip
            model.save(path)
        calib = _rgb(data.x_train[-500:], size)
        out.append((name, path, calib, _rgb(data.x_test[:test], size), data.y_test[:test]))
    return out


def _rgb_cnn(keras, size: int):
    inp = keras.Input((size, size, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))


def _mobilenet(keras, size: int):
    inp = keras.Input((size, size, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, weights=None, include_top=False, pooling="avg"
    )
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(base(h)))


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    it.allocate_tensors()
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    it.invoke()
    y = it.get_tensor(out["index"]).astype(np.float32)
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        y = (y - zero) * scale
    return y


def _p50_us(path: Path, x: np.ndarray, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    one = x[:1]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        one = np.round(one / scale + zero)
    it.set_tensor(inp["index"], one.astype(inp["dtype"]))
    for _ in range(10):
        it.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def main(argv: list[str] | None = None) -> int:
    """Train the four models, convert each mode by both engines, write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--engines", default="converter,quantizer",
        help="Measure only these; the other engines' rows come from OUT/engines.json.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from edgeship.convert import convert_model
    from edgeship.train.datasets import load_dataset

    data = load_dataset("fashion-mnist")
    root = args.out
    root.mkdir(parents=True, exist_ok=True)
    engines = tuple(args.engines.split(","))
    old = root / "engines.json"
    kept = (
        [r for r in json.loads(old.read_text()) if r["engine"] not in engines]
        if (old.exists() and len(engines) < 2)
        else []
    )
    rows = []
    for name, path, calib, x, y in _models(root, data, args.test):
        from edgeship.train.quiet import import_keras

        keras_probs = import_keras().saving.load_model(path).predict(x, verbose=0)
        np.save(root / f"{name}_calib.npy", calib)
        for engine in engines:
            out = root / name / engine
            report = convert_model(
                path, out, modes=("float32", *MODES), engine=engine, verify_samples=200,
                calibration_data=root / f"{name}_calib.npy",
            )  # fmt: skip
            for result in report.results:
                if result.mode == "float32" and engine == "quantizer" and len(engines) > 1:
                    continue
                row = {"model": name, "mode": result.mode, "engine": engine, "ok": result.ok}
                if result.ok:
                    probs = _predict(result.path, x)
                    row.update(
                        accuracy=float(np.mean(probs.argmax(1) == y)),
                        agreement=float(np.mean(probs.argmax(1) == keras_probs.argmax(1))),
                        size_bytes=result.size_bytes,
                        p50_us=_p50_us(result.path, x, args.runs),
                        convert_s=result.convert_seconds,
                    )
                else:
                    row["error"] = result.error
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    models = list(dict.fromkeys(r["model"] for r in kept + rows))
    modes = ("float32", *MODES)
    rows = sorted(
        kept + rows,
        key=lambda r: (models.index(r["model"]), r["engine"], modes.index(r["mode"])),
    )
    (root / "engines.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| model | mode | engine | accuracy | agreement | size | p50 µs (1 thread) | convert s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["ok"]:
            lines.append(
                f"| {r['model']} | {r['mode']} | {r['engine']} | {r['accuracy']:.4f} | "
                f"{r['agreement']:.4f} | {r['size_bytes']:,} | {r['p50_us']:.0f} | "
                f"{r['convert_s']:.1f} |"
            )
        else:
            lines.append(f"| {r['model']} | {r['mode']} | {r['engine']} | failed: "
                         f"{r.get('error', '')[:80]} | | | | |")  # fmt: skip
    (root / "engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
