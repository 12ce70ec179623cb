"""int8 with chosen ops kept in float: calibrate once, re-quantize for each choice.

The machinery is TensorFlow's `tf.lite.experimental.QuantizationDebugger`: given the same
converter that plain int8 uses, it calibrates once and re-runs only the MLIR quantizer for a
`denylisted_nodes` list (ops named by their output tensor), which takes milliseconds. The
quantizer is the one plain int8 goes through, so a model with nothing kept in float
quantizes exactly as plain int8 does, and a partly-float model is an ordinary `.tflite`
(DEQUANTIZE/QUANTIZE around the float ops) that every LiteRT runtime runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from edgeship.convert.converter import (
    CALIBRATION_BATCH,
    ModeConversionError,
    _reason,
    make_converter,
)
from edgeship.convert.graph import Graph, read_graph
from edgeship.train.quiet import captured_stderr


class PartialQuantizer(Protocol):
    """A quantized model whose ops (named by output tensor) can be kept in float: int8 here,
    int16x8 in `edgeship.convert.partial16`."""

    graph: Graph

    def quantize(self, float_nodes: Iterable[str] = ()) -> bytes: ...


class SelectiveQuantizer:
    """Calibrate an exported model once for int8, then quantize it with some ops in float."""

    def __init__(self, export_dir: str, calibration: np.ndarray) -> None:
        import tensorflow as tf

        samples = np.asarray(calibration, dtype=np.float32)

        def dataset():
            for start in range(0, len(samples), CALIBRATION_BATCH):
                yield [samples[start : start + CALIBRATION_BATCH]]

        converter = make_converter(export_dir, "int8", samples)
        self._tf = tf
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_stderr() as log:
                warnings.simplefilter("ignore")
                self._debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=dataset
                )
        except Exception as err:  # the converter raises anything
            raise ModeConversionError(_reason(err, log)) from None
        self.calibrated_graph: Graph = read_graph(self._debugger.calibrated_model)
        self.graph = self.calibrated_graph  # the graph whose ops `quantize` names

    def quantize(self, float_nodes: Iterable[str] = ()) -> bytes:
        """The int8 model with the ops named in `float_nodes` (output tensor names) in float."""
        nodes = sorted(set(float_nodes))
        options = self._tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=nodes or None
        )
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_stderr() as log:
                warnings.simplefilter("ignore")
                self._debugger.options = options
                return bytes(self._debugger.get_nondebug_quantized_model())
        except Exception as err:
            raise ModeConversionError(_reason(err, log)) from None
