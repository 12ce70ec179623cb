"""A model ready to be converted: what a framework front end hands to the conversion pipeline.

A front end (Keras here; PyTorch through litert-torch in `edgeship.convert.torch_source`) loads the
user's model, makes its **float32 `.tflite`** with the framework's own converter (NHWC image in,
class scores out) and says how to run the original model (`reference`), so that every mode,
check, report and rescue after that (`edgeship.convert.run.convert_source`) works from the file
alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.convert.errors import ConvertError
from edgeship.convert.loading import ModelSignature

__all__ = ["FRAMEWORKS", "ModelSource", "keras_source", "reference_probabilities"]

FRAMEWORKS: tuple[str, ...] = ("keras", "torch")

# (N, H, W, C) float32 model input -> (N, classes) float64 probabilities.
Reference = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A classifier made ready for conversion by a framework front end.

    - `framework`: "keras" or "torch".
    - `source_model`: the user's file (recorded as the metadata's `source_model`).
    - `signature`: the input image (H, W, C; float32 NHWC) and the class count.
    - `float32_tflite`: the framework converter's float32 flatbuffer, NHWC input, batch -1.
    - `reference`: the original model on a (N, H, W, C) float32 batch -> (N, classes)
      probabilities (softmax or sigmoid applied when it outputs logits: `outputs_logits`).
    - `layer_names`: the model's layer (Keras) or module (PyTorch) names, as they appear in the
      `.tflite`'s tensor names: the layer report and the rescue name layers by them.
    - `saved_model_dir`: Keras only, the exported SavedModel that TensorFlow's converter (the
      `converter` engine) and its selective quantizer read; None for other frameworks.
    - `recorded`: what the front end adds to the metadata's `source_model` block beside the
      path and sha256 (PyTorch: the factory `function` of `FILE.py:FUNCTION`, versions).
    """

    framework: str
    source_model: Path
    signature: ModelSignature
    float32_tflite: bytes
    reference: Reference
    outputs_logits: bool = False
    layer_names: tuple[str, ...] = ()
    saved_model_dir: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ConvertError(
                f"Unknown framework. Choose from {', '.join(FRAMEWORKS)}. "
                f"Received: framework={self.framework!r}"
            )
        if not isinstance(self.signature, ModelSignature):
            raise ConvertError(
                f"signature must be a ModelSignature. Received: {type(self.signature).__name__}"
            )
        data = self.float32_tflite
        if not isinstance(data, bytes) or len(data) < 8 or data[4:8] != b"TFL3":
            raise ConvertError(
                "float32_tflite must be the bytes of a .tflite flatbuffer (identifier TFL3). "
                f"Received: {type(data).__name__}"
            )
        if not callable(self.reference):
            raise ConvertError(
                "reference must be callable: model input batch -> probabilities. "
                f"Received: {type(self.reference).__name__}"
            )
        if not isinstance(self.layer_names, tuple) or not all(
            isinstance(n, str) for n in self.layer_names
        ):
            raise ConvertError(
                f"layer_names must be a tuple of str. Received: {self.layer_names!r}"
            )
        object.__setattr__(self, "source_model", Path(self.source_model))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """The reference model's probabilities on model input `x`, float64 (N, classes)."""
        return np.asarray(self.reference(np.asarray(x, dtype=np.float32)), dtype=np.float64)


def outputs_logits(float32_tflite: bytes) -> bool:
    """True when the float32 model's output is not written by a softmax or sigmoid."""
    from edge_runtime.backends import load_backend
    from edge_runtime.metadata.graph import PROBABILITY_HEADS, output_head
    from edgeship.train.quiet import captured_stderr

    with captured_stderr():
        interpreter = load_backend().make_interpreter(float32_tflite)
    out = int(interpreter.get_output_details()[0]["index"])
    return output_head(float32_tflite, out) not in PROBABILITY_HEADS


def reference_probabilities(scores: np.ndarray, logits: bool) -> np.ndarray:
    """Raw class scores -> float64 probabilities, the rule `EdgeClassifier` applies."""
    from edge_runtime.scores import as_probabilities

    return np.asarray(as_probabilities(scores, probabilities=not logits), dtype=np.float64)


@contextlib.contextmanager
def keras_source(model_path: str | os.PathLike) -> Iterator[ModelSource]:
    """The Keras front end: load `.keras`/`.h5`, export its SavedModel, convert to float32.

    The SavedModel lives as long as the context (the `converter` engine reads it).
    """
    from edgeship.convert.converter import ModeConversionError, saved_model, to_tflite
    from edgeship.convert.loading import check_model_file, load_keras_model, model_signature
    from edgeship.train.quiet import captured_stderr

    path = check_model_file(model_path)
    model = load_keras_model(path)
    signature = model_signature(model)
    with saved_model(model, signature.input_shape) as export_dir:
        try:
            with captured_stderr():  # TensorFlow's device probing on first use
                data = to_tflite(export_dir, "float32")
        except ModeConversionError as err:
            raise ConvertError(
                f"The TFLite converter cannot make the float32 model ({err}). Check that every "
                f"layer is a standard Keras layer that TFLite supports. Received: path={path}"
            ) from None
        logits = outputs_logits(data)

        def reference(x: np.ndarray) -> np.ndarray:
            scores = model.predict(x, batch_size=256, verbose=0)
            return reference_probabilities(scores, logits)

        yield ModelSource(
            framework="keras",
            source_model=path,
            signature=signature,
            float32_tflite=data,
            reference=reference,
            outputs_logits=logits,
            layer_names=tuple(layer.name for layer in model.layers),
            saved_model_dir=export_dir,
        )
