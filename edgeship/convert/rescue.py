"""int8 or int16x8 with chosen ops rescued, by ai-edge-quantizer recipes on the float32 `.tflite`.

The model is calibrated once; each choice of ops is one recipe: the mode's static recipe for
the whole model, then per chosen op (matched by its output tensor name, the quantizer's op
*scope*) either

- **hybrid**: int8 weights kept, float compute (ai-edge-quantizer's weight-only config:
  `compute_precision: FLOAT`, `explicit_dequantize: true`: the weights are stored int8 and a
  DEQUANTIZE op hands them to a float op; ops without weights run in float), or
- **float**: `no_quantize`, the op as it is in the float32 model.

A rescued op's input and output stay float, so an outlier in its activations costs nothing;
with `hybrid` the model keeps almost all of int8's size. Everything else quantizes exactly as
the plain mode does (with nothing chosen, the recipe is the plain mode's).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

import numpy as np

from edgeship.convert.converter import ModeConversionError, _reason
from edgeship.convert.engine import (
    QUANTIZER_CALIBRATION_BATCH,
    Recipe,
    calibration_set,
    default_recipe,
    inline_buffers,
    quiet,
)
from edgeship.convert.errors import ConvertError
from edgeship.convert.graph import Graph, read_graph

PRECISIONS: tuple[str, ...] = ("hybrid", "float")

# ai-edge-quantizer's weight-only int8: int8 weights (per channel), float compute.
_WEIGHT_ONLY_INT8 = {
    "weight_tensor_config": {
        "num_bits": 8,
        "symmetric": True,
        "granularity": "CHANNELWISE",
        "dtype": "INT",
    },
    "compute_precision": "FLOAT",
    "explicit_dequantize": True,
}


# The ops with weights that ai-edge-quantizer's weight-only config takes.
_WEIGHTED_OPS = frozenset(
    {
        "FULLY_CONNECTED",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "TRANSPOSE_CONV",
        "BATCH_MATMUL",
        "EMBEDDING_LOOKUP",
        "CONV_3D",
    }
)


def check_precision(precision: str) -> str:
    """`precision` if it is one of `PRECISIONS`, else `ConvertError`."""
    if precision not in PRECISIONS:
        raise ConvertError(
            f"--fallback-precision must be one of {', '.join(PRECISIONS)}. Received: {precision!r}"
        )
    return precision


def op_regex(node: str) -> str:
    """The recipe regex that matches exactly the op whose first output is `node`."""
    return "^" + re.escape(node) + ";"


class RecipeQuantizer:
    """Calibrate the float32 model once for `mode`, then quantize it with some ops rescued."""

    def __init__(
        self,
        float_bytes: bytes,
        mode: str,
        calibration: np.ndarray,
        precision: str = "hybrid",
        int8_io: bool = False,
    ) -> None:
        from ai_edge_quantizer import quantizer

        if mode not in ("int8", "int16x8"):
            raise ConvertError(f"The rescue is for int8 and int16x8. Received: mode={mode}")
        self.mode, self.precision = mode, check_precision(precision)
        self._float = bytes(float_bytes)
        self._base = default_recipe(mode, int8_io)
        self.graph: Graph = read_graph(self._float)
        self._op_types = {self.graph.output_name(op): op.name for op in self.graph.ops}
        log: list[str] = []
        try:
            with quiet() as log:
                q = quantizer.Quantizer(bytearray(self._float), self._base)
                key, data, _ = calibration_set(
                    self._float, calibration, QUANTIZER_CALIBRATION_BATCH
                )
                self._calibration = q.calibrate({key: data})
        except Exception as err:  # the quantizer raises anything
            raise ModeConversionError(_reason(err, log)) from None

    def recipe(self, float_nodes: Iterable[str] = ()) -> Recipe:
        """The recipe that keeps the ops named in `float_nodes` at `precision`."""
        rp = copy.deepcopy(self._base)
        for node in sorted(set(float_nodes)):
            regex = op_regex(node)
            rp.append({"regex": regex, "operation": "*", "algorithm_key": "no_quantize"})
            op_type = self._op_types.get(node)
            if self.precision == "hybrid" and op_type in _WEIGHTED_OPS:
                # A later entry wins: int8 weights for an op that has weights.
                rp.append(
                    {
                        "regex": regex,
                        "operation": op_type,
                        "algorithm_key": "min_max_uniform_quantize",
                        "op_config": copy.deepcopy(_WEIGHT_ONLY_INT8),
                    }
                )
        return rp

    def quantize(self, float_nodes: Iterable[str] = ()) -> bytes:
        """The quantized model with the ops named in `float_nodes` (output tensor names)
        rescued at `precision`."""
        from ai_edge_quantizer import quantizer

        log: list[str] = []
        try:
            with quiet() as log:
                q = quantizer.Quantizer(bytearray(self._float), self.recipe(float_nodes))
                out = q.quantize(self._calibration, enable_progress_report=False)
                return inline_buffers(bytes(out.quantized_model))
        except Exception as err:
            raise ModeConversionError(_reason(err, log)) from None
