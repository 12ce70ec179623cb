"""Keras model -> TFLite flatbuffer bytes, one quantization mode at a time.

The path that works with Keras 3 and TF 2.21: `model.export(dir, format="tf_saved_model")`
with an input signature whose batch dimension is None, then
`TFLiteConverter.from_saved_model(dir)`. The batch dimension stays -1 in the `.tflite`'s
`shape_signature`, so a runtime can `resize_tensor_input` and batch. Two paths that look
simpler are worse: `from_concrete_functions([fn], model)` keeps resource variables and
full-integer calibration then fails in READ_VARIABLE; `from_concrete_functions([fn])`
without the model works but takes TF's deprecated frozen-graph path (and warns so).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeship.convert.errors import ConvertError
from edgeship.convert.modes import CALIBRATED_MODES, MODES
from edgeship.train.quiet import captured_stderr

# Samples per representative-dataset step: the calibrator resizes the (dynamic) batch
# dimension and only tracks each tensor's min/max, so batching changes speed, not ranges.
CALIBRATION_BATCH = 32


class ModeConversionError(ConvertError):
    """The TFLite converter failed for one mode (the others may still succeed)."""


def _reason(err: BaseException, log: list[str]) -> str:
    """The most telling line of a converter failure."""
    candidates = [str(err)] + log
    for text in candidates:
        for line in text.splitlines():
            low = line.lower()
            if "error:" in low or "not supported" in low or "failed" in low or "unsupported" in low:
                return line.strip()[:300]
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{type(err).__name__}: {first[:300]}"


def _export_inference(model, export_dir: str, spec) -> None:
    """`model.export`'s SavedModel, with the endpoint called as inference (`training=False`).

    Keras 3 resolves a `training=None` call to each layer's own default, and its random
    augmentation layers (RandomFlip, RandomRotation, RandomZoom, ... inside the model, as in
    TensorFlow's image classification tutorial) default to True: exported as `model.export`
    traces it, the graph augments every image and holds random-seed ops TFLite cannot convert.
    """
    from keras.export import ExportArchive

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda image: model(image, training=False), input_signature=[spec]
    )
    archive.write_out(export_dir, verbose=False)


@contextlib.contextmanager
def saved_model(model, input_shape: tuple[int, int, int]) -> Iterator[str]:
    """Export the model's inference function (dynamic batch) to a temporary SavedModel."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="image")
    with tempfile.TemporaryDirectory(prefix="edgeship-convert-") as tmp:
        export_dir = str(Path(tmp) / "saved_model")
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_stderr() as log:
                warnings.simplefilter("ignore")
                _export_inference(model, export_dir, spec)
        except Exception as err:  # tracing errors surface as anything
            raise ConvertError(
                f"Cannot export the model for conversion ({_reason(err, log)}). "
                "Check that it runs on one image batch in Keras."
            ) from None
        yield export_dir


def make_converter(
    export_dir: str,
    mode: str,
    calibration: np.ndarray | None = None,
    int8_io: bool = False,
):
    """A `TFLiteConverter` over an exported SavedModel, set up for `mode` (not yet run)."""
    import tensorflow as tf

    if mode not in MODES:
        raise ConvertError(f"Unknown mode. Choose from {','.join(MODES)}. Received: mode={mode}")
    if mode in CALIBRATED_MODES and (calibration is None or len(calibration) == 0):
        raise ConvertError(f"Mode {mode} needs calibration data. Received: none")

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in CALIBRATED_MODES:
        samples = np.asarray(calibration, dtype=np.float32)

        def representative_dataset():
            for start in range(0, len(samples), CALIBRATION_BATCH):
                yield [samples[start : start + CALIBRATION_BATCH]]

        converter.representative_dataset = representative_dataset
    if mode == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    if mode == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    return converter


def to_tflite(
    export_dir: str,
    mode: str,
    calibration: np.ndarray | None = None,
    int8_io: bool = False,
) -> bytes:
    """Convert an exported SavedModel (see `saved_model`) to a `.tflite` flatbuffer in `mode`.

    `calibration` (float32, the model's input space) is required by int8 and int16x8.
    `int8_io` makes an int8 model's input and output tensors int8 too.
    """
    converter = make_converter(export_dir, mode, calibration, int8_io)
    log: list[str] = []
    try:
        with warnings.catch_warnings(), captured_stderr() as log:
            warnings.simplefilter("ignore")
            return bytes(converter.convert())
    except Exception as err:  # the converter raises ConverterError, RuntimeError, ValueError ...
        raise ModeConversionError(_reason(err, log)) from None
