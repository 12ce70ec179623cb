"""`python -m edgeship.bench.memprobe MODEL [--threads N] [--batch N]`: one model's peak memory.

Runs in its own process so TensorFlow's footprint never pollutes a TFLite figure. Prints one
JSON object: `start_rss_mb` (the bare interpreter), `baseline_rss_mb` (after importing the
runtime the model needs: TensorFlow+Keras for `.keras`, torch for a PyTorch `FILE.pt2` or
`FILE.py:FUNCTION`, edge_runtime+LiteRT for `.tflite`),
`peak_rss_mb` (after loading the model and running a batch-1 call and one `--batch` call),
and `model_rss_mb` = peak - baseline. All are high-water marks (`VmHWM`, else `ru_maxrss`), MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edge_runtime.device.memory import peak_rss_mb


def _is_torch(path: str) -> bool:
    from edgeship.convert.torch_source import split_torch_spec

    return split_torch_spec(path) is not None


def probe(path: str, threads: int | None, batch: int) -> dict:
    """Load `path`, run it, and return the RSS figures (see the module docstring)."""
    start = peak_rss_mb()
    if path.endswith(".keras") or path.endswith(".h5"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras
        import numpy as np
        import tensorflow as tf

        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        baseline = peak_rss_mb()
        model = keras.models.load_model(path, compile=False)
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        model.predict(np.zeros((1, *shape), np.float32), verbose=0)
        model.predict(np.zeros((batch, *shape), np.float32), batch_size=batch, verbose=0)
        fmt = "keras"
    elif _is_torch(path):
        import numpy as np
        import torch

        from edgeship.convert.torch_source import load_torch_module, torch_probabilities

        if threads:
            torch.set_num_threads(threads)
        baseline = peak_rss_mb()
        module, shape = load_torch_module(path)
        torch_probabilities(module, np.zeros((1, *shape), np.float32))
        torch_probabilities(module, np.zeros((batch, *shape), np.float32))
        fmt = "torch"
    else:
        import numpy as np

        from edge_runtime.backends import load_backend
        from edge_runtime.classifier import EdgeClassifier

        load_backend(None)  # the interpreter module is part of the baseline
        baseline = peak_rss_mb()
        clf = EdgeClassifier.load(path, num_threads=threads, batch_size=batch)
        clf.predict_proba(np.zeros((1, *clf.input_shape), np.uint8))
        clf.predict_proba(np.zeros((batch, *clf.input_shape), np.uint8))
        fmt = "tflite"
    peak = peak_rss_mb()
    return {
        "model": path,
        "format": fmt,
        "start_rss_mb": start,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "model_rss_mb": round(peak - baseline, 3),
        "batch": batch,
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the probe's JSON, or `error: ...` and exit 2."""
    parser = argparse.ArgumentParser(prog="python -m edgeship.bench.memprobe", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        result = probe(args.model, args.threads, args.batch)
    except Exception as err:  # noqa: BLE001 - a probe reports any failure as one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {first}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
