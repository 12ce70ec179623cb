"""edge_runtime: run an edgeship (or any) .tflite classifier without TensorFlow."""

from typing import TYPE_CHECKING, Any

from edge_runtime.errors import (
    BackendError,
    EdgeRuntimeError,
    EdgeshipError,
    ImageError,
    InputShapeError,
    LabelsError,
    ModelFileError,
)
from edge_runtime.options import OptionError

if TYPE_CHECKING:  # the lazy exports of __getattr__, as a type checker sees them
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.metadata.block import embed_metadata, read_metadata
    from edge_runtime.metadata.standard import StandardMetadata, read_standard_metadata
    from edge_runtime.prediction import Prediction

__all__ = [
    "BackendError",
    "EdgeClassifier",
    "EdgeRuntimeError",
    "EdgeshipError",
    "ImageError",
    "InputShapeError",
    "LabelsError",
    "ModelFileError",
    "OptionError",
    "Prediction",
    "StandardMetadata",
    "embed_metadata",
    "read_metadata",
    "read_standard_metadata",
]


def __getattr__(name: str) -> Any:
    """Lazy exports: `import edge_runtime` stays cheap (no NumPy/interpreter until used)."""
    if name in ("EdgeClassifier", "Prediction"):
        from edge_runtime import classifier

        return getattr(classifier, name)
    if name in ("embed_metadata", "read_metadata"):
        from edge_runtime.metadata import block

        return getattr(block, name)
    if name in ("StandardMetadata", "read_standard_metadata"):
        from edge_runtime.metadata import standard

        return getattr(standard, name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
