"""Run a .tflite on inputs from an .npy with a bare interpreter; print the outputs as JSON.

A standalone script (standard library + NumPy + a TFLite backend only), so it runs in any
environment, the emulated arm64 Python included: it checks an environment before and apart
from `edge_runtime`.

    python raw_invoke.py ai_edge_litert|tflite_runtime MODEL.tflite INPUTS.npy
"""

import importlib
import json
import sys

import numpy as np


def main(backend: str, model: str, inputs: str) -> None:
    """Invoke `model` once per row of `inputs`; print {"outputs": [[...], ...], ...}."""
    module = importlib.import_module(f"{backend}.interpreter")
    interpreter = module.Interpreter(model_path=model, num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    rows = []
    for x in np.load(inputs):
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].tolist())
    print(json.dumps({"backend": backend, "numpy": np.__version__, "outputs": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
