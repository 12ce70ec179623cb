"""edge_runtime: run an edgeship (or any) .tflite classifier without TensorFlow."""

from edge_runtime.errors import (
    BackendError,
    EdgeRuntimeError,
    EdgeshipError,
    ImageError,
    InputShapeError,
    ModelFileError,
)

__all__ = [
    "BackendError",
    "EdgeRuntimeError",
    "EdgeshipError",
    "ImageError",
    "InputShapeError",
    "ModelFileError",
]
