"""TFLite interpreter backends: find one, check it can run, report its version.

Order: `ai_edge_litert` (maintained, the default), `tflite_runtime` (legacy, NumPy 1.x only),
`tensorflow` (`tf.lite`; only when asked for by name or when nothing else is installed, since
importing TensorFlow takes seconds and the device does not have it).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from edge_runtime.errors import BackendError

if TYPE_CHECKING:
    import numpy.typing as npt

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}
_DISTRIBUTIONS = {
    "ai_edge_litert": ("ai-edge-litert", "ai_edge_litert"),
    "tflite_runtime": ("tflite-runtime", "tflite_runtime"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64"),
}
_ALIASES = {
    "litert": "ai_edge_litert",
    "ai-edge-litert": "ai_edge_litert",
    "tflite": "tflite_runtime",
    "tflite-runtime": "tflite_runtime",
    "tf": "tensorflow",
}


class Interpreter(Protocol):
    """What edgeship calls on an `Interpreter` of ai_edge_litert, tflite_runtime or tf.lite."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def get_signature_list(self) -> dict[str, Any]: ...
    def resize_tensor_input(self, input_index: int, tensor_size: Sequence[int]) -> None: ...
    def set_tensor(self, tensor_index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> npt.NDArray[Any]: ...


@dataclass(frozen=True)
class Backend:
    """A usable interpreter backend: its name, version and `Interpreter` class."""

    name: str
    version: str
    interpreter_class: Any

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ValueError(f"Unknown backend. Expected one of {BACKENDS}. Received: {self.name}")

    def make_interpreter(self, model_content: bytes, num_threads: int | None = None) -> Interpreter:
        """A new interpreter over `model_content` (tensors not yet allocated)."""
        interpreter = self.interpreter_class(model_content=model_content, num_threads=num_threads)
        return cast(Interpreter, interpreter)  # the backends ship no type hints


def _version(name: str) -> str:
    for dist in _DISTRIBUTIONS[name]:
        try:
            return importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return "unknown"


def _installed(name: str) -> bool:
    top = _MODULES[name].split(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def installed_backends() -> list[str]:
    """Names of the backends whose package is installed (found without importing it)."""
    return [name for name in BACKENDS if _installed(name)]


def normalize_backend_name(name: str) -> str:
    """Map user spellings (`litert`, `tflite-runtime`, `tf`, ...) to a BACKENDS name."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise BackendError(
            f"Unknown backend. Choose one of {', '.join(BACKENDS)}. Received: backend={name!r}"
        )
    return key


def _check_numpy(name: str, version: str) -> None:
    """tflite-runtime (<= 2.14, the last release) is built against NumPy 1.x."""
    if name != "tflite_runtime":
        return
    numpy_major = int(np.__version__.split(".")[0])
    try:
        tflite_major_minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        tflite_major_minor = (2, 14)
    if numpy_major >= 2 and tflite_major_minor <= (2, 14):
        raise BackendError(
            f"tflite-runtime {version} is built against NumPy 1.x and cannot run with NumPy "
            f"{np.__version__}. Fix: pip install 'numpy<2' (or pip install 'edgeship[tflite]'), "
            "or use the maintained backend: pip install 'edgeship[edge]' (ai-edge-litert). "
            f"Received: backend=tflite_runtime {version}, numpy={np.__version__}"
        )


def _import(name: str) -> Backend:
    version = _version(name)
    _check_numpy(name, version)
    try:
        if name == "tensorflow":  # tf.lite is an API alias, not an importable module
            module = importlib.import_module("tensorflow").lite
        else:
            module = importlib.import_module(_MODULES[name])
    except (ImportError, AttributeError) as err:
        raise BackendError(
            f"Cannot import the {name} backend ({err}). Reinstall it, e.g. "
            f"pip install 'edgeship[edge]'. Received: backend={name}"
        ) from None
    return Backend(name=name, version=version, interpreter_class=module.Interpreter)


def load_backend(name: str | None = None) -> Backend:
    """The named backend, or the first usable one of ai_edge_litert, tflite_runtime, tensorflow."""
    if name:
        key = normalize_backend_name(name)
        if not _installed(key):
            raise BackendError(
                f"The {key} backend is not installed. Install it (ai-edge-litert: pip install "
                "'edgeship[edge]'; tflite-runtime: pip install 'edgeship[tflite]') or pick an "
                f"installed one: {installed_backends() or 'none'}. Received: backend={name}"
            )
        return _import(key)
    first_error: BackendError | None = None
    for key in ("ai_edge_litert", "tflite_runtime"):
        if _installed(key):
            try:
                return _import(key)
            except BackendError as err:  # broken or mismatched: try the next, report the first
                first_error = first_error or err
    if first_error is not None:
        raise first_error
    if _installed("tensorflow"):
        return _import("tensorflow")
    raise BackendError(
        "No TFLite interpreter is installed. Install the runtime: pip install 'edgeship[edge]' "
        "(ai-edge-litert). Received: none of ai_edge_litert, tflite_runtime, tensorflow"
    )


def numpy_version() -> str:
    """The NumPy version in use (reported by `info` and `bench`)."""
    return str(np.__version__)
