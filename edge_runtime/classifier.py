"""`EdgeClassifier`: a .tflite image classifier behind one small, thread-safe API.

Input rule: a **uint8** array is raw pixels (the metadata's `input.scale`/`input.offset` are
applied, then the input tensor's quantization); a **float** array is already in the model's
input space (only the tensor's quantization is applied). PIL images and paths are
preprocessed (`edge_runtime.preprocess`) into raw pixels first.

Raw pixels go through a 256-entry lookup table built once at load (pixel -> the exact value
the input tensor wants), so the per-call cost is one indexing op, whatever the quantization.
One interpreter serves all threads behind a lock; batches are fed in chunks of `batch_size`
by resizing the input tensor when the model allows a dynamic batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, load_backend
from edge_runtime.errors import InputShapeError, ModelFileError
from edge_runtime.metadata import read_embedded_metadata, read_model_bytes, read_sidecar
from edge_runtime.preprocess import MAX_PIXELS, _normalize_invert, load_and_preprocess
from edge_runtime.tensors import TensorSpec

DEFAULT_BATCH_SIZE = 256
_PROB_TOLERANCE = 0.05


@dataclass(frozen=True, eq=False)
class Prediction:
    """One image's answer: the top class `index`, its `label`, `confidence` and all scores."""

    index: int
    label: str
    confidence: float
    probabilities: np.ndarray
    class_names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.probabilities):
            raise ValueError(
                f"index must be in [0, {len(self.probabilities)}). Received: index={self.index}"
            )

    def top_k(self, k: int = 3) -> list[dict[str, Any]]:
        """The `k` best classes as `{"index", "label", "confidence"}`, best first."""
        k = max(1, min(int(k), len(self.probabilities)))
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        names = self.class_names
        return [
            {
                "index": int(i),
                "label": names[i] if i < len(names) else str(int(i)),
                "confidence": float(self.probabilities[i]),
            }
            for i in order
        ]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    """True if every row is a distribution (the model ends in softmax)."""
    return bool(
        scores.min() >= -1e-6 and np.abs(scores.sum(axis=1) - 1.0).max() <= _PROB_TOLERANCE
    )


def _quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Model-space floats -> what the tensor holds (its dtype, its quantization)."""
    if spec.dtype.kind == "f":
        return values.astype(spec.dtype, copy=False)
    info = np.iinfo(spec.dtype)
    if spec.quantized:
        values = values / spec.scale + spec.zero_point
    return np.clip(np.rint(values), info.min, info.max).astype(spec.dtype)


class EdgeClassifier:
    """A TFLite image classifier: `load`, then `predict` / `predict_proba`. Thread-safe."""

    def __init__(
        self,
        interpreter: Any,
        backend: Backend,
        *,
        metadata: dict[str, Any] | None = None,
        path: Path | None = None,
        size_bytes: int = 0,
        num_threads: int | None = None,
        invert: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self._interp = interpreter
        self.backend = backend
        self.metadata = metadata
        self.path = path
        self.size_bytes = size_bytes
        self.num_threads = num_threads
        self.invert = _normalize_invert(invert)
        self.max_pixels = int(max_pixels)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
        self._lock = threading.Lock()
        self._setup(int(batch_size))

    # ----------------------------------------------------------------------------- load
    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        num_threads: int | None = None,
        backend: str | None = None,
        *,
        invert: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = MAX_PIXELS,
    ) -> EdgeClassifier:
        """Read a .tflite file (and its `edgeship` metadata or sidecar) into a classifier."""
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1. Received: num_threads={num_threads}")
        path = Path(path)
        data = read_model_bytes(path)
        metadata = read_embedded_metadata(data, f"path={path}")
        if metadata is None:
            metadata = read_sidecar(path)
        chosen = load_backend(backend)
        try:
            interpreter = chosen.make_interpreter(data, num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ModelFileError(
                f"The {chosen.name} interpreter cannot load the model ({first_line}). "
                f"The file may be truncated or use unsupported ops. Received: path={path}"
            ) from None
        return cls(
            interpreter,
            chosen,
            metadata=metadata,
            path=path,
            size_bytes=len(data),
            num_threads=num_threads,
            invert=invert,
            batch_size=batch_size,
            max_pixels=max_pixels,
        )

    def _setup(self, batch_size: int) -> None:
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        where = f"path={self.path}"
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(
                "Expected a classifier with exactly one input and at least one output. "
                f"Received: {len(inputs)} inputs, {len(outputs)} outputs, {where}"
            )
        self.input_spec = TensorSpec.from_details(inputs[0])
        self.output_spec = TensorSpec.from_details(outputs[0])
        meta_input = (self.metadata or {}).get("input") or {}
        tensor_shape = self.input_spec.shape
        feed = tuple(tensor_shape[1:])
        if len(tensor_shape) == 4:
            image_shape = feed
        elif len(tensor_shape) == 3:
            image_shape = (*feed, 1)
        elif len(tensor_shape) == 2 and meta_input.get("shape") and int(
            np.prod(meta_input["shape"])
        ) == feed[0]:
            image_shape = tuple(int(d) for d in meta_input["shape"])
        else:
            raise ModelFileError(
                "Expected an image model: input (batch, H, W, C) or (batch, H, W). "
                f"Received: input shape={list(tensor_shape)}, {where}"
            )
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in image_shape)
        self._feed_shape = feed
        self.num_classes = int(np.prod(self.output_spec.shape[1:])) if len(
            self.output_spec.shape
        ) > 1 else int(self.output_spec.shape[0])
        names = (self.metadata or {}).get("class_names")
        if isinstance(names, list) and len(names) == self.num_classes:
            self.class_names: tuple[str, ...] = tuple(str(n) for n in names)
        else:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        self.background = meta_input.get("background")
        if "scale" in meta_input:
            scale = float(meta_input["scale"])
            offset = float(meta_input.get("offset", 0.0))
        elif self.input_spec.dtype == np.uint8 and self.input_spec.quantized:
            # No metadata, uint8 input tensor: raw pixels go in unchanged.
            scale = self.input_spec.scale
            offset = -self.input_spec.zero_point * scale
        else:
            scale, offset = 1.0, 0.0
        self.input_scale, self.input_offset = scale, offset
        pixels = np.arange(256, dtype=np.float64) * scale + offset
        self._lut = _quantize(pixels, self.input_spec)
        # Fast path: when the table is "add k modulo 256" on the bytes (e.g. int8 with scale
        # 1/255 and zero point -128 is p - 128), one wrapping uint8 add replaces the gather.
        self._shift: np.uint8 | None = None
        if self._lut.itemsize == 1:
            bits = self._lut.view(np.uint8)
            k = int(bits[0])
            if np.array_equal(bits, (np.arange(256) + k) % 256):
                self._shift = np.uint8(k)
        self._in_index = self.input_spec.index
        self._out_index = self.output_spec.index
        self._out_quant = (
            (np.float32(self.output_spec.scale), np.float32(self.output_spec.zero_point))
            if self.output_spec.quantized
            else None
        )
        # 1-byte quantized outputs dequantize through a 256-entry table indexed by the bytes.
        self._out_lut: np.ndarray | None = None
        if self._out_quant is not None and self.output_spec.dtype.itemsize == 1:
            codes = np.arange(256, dtype=np.uint8).view(self.output_spec.dtype)
            scale, zero_point = self._out_quant
            self._out_lut = ((codes.astype(np.float32) - zero_point) * scale).astype(np.float32)
        # Whether outputs are already probabilities (softmax head): learned on the first call.
        self._probabilities: bool | None = None
        self._allocated_batch = int(tensor_shape[0]) if tensor_shape else 1
        self._can_batch: bool | None = True if self.input_spec.batch_resizable else None
        self.batch_size = batch_size

    # ------------------------------------------------------------------------ interpreter
    def _resize(self, n: int) -> bool:
        """Make the input batch `n` (lock held). False if the model refuses."""
        if n == self._allocated_batch:
            return True
        if n != 1 and self._can_batch is False:
            return False
        try:
            self._interp.resize_tensor_input(
                self._in_index, [n, *self._feed_shape], strict=bool(self._can_batch)
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError):
            if n == 1:
                raise
            self._can_batch = False
            self._interp.resize_tensor_input(self._in_index, [1, *self._feed_shape])
            self._interp.allocate_tensors()
            self._allocated_batch = 1
            return False
        self._allocated_batch = n
        if n != 1:
            self._can_batch = True
        return True

    def _invoke_chunk(self, x: np.ndarray) -> np.ndarray:
        """x: (n, *feed) in the tensor's dtype, n == allocated batch (lock held)."""
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Tensor-ready input (n, *feed) -> float32 scores (n, num_classes)."""
        n = x.shape[0]
        with self._lock:
            if n == 1:
                if self._allocated_batch != 1:
                    self._resize(1)
                self._interp.set_tensor(self._in_index, x)
                self._interp.invoke()
                out = self._interp.get_tensor(self._out_index)
            else:
                chunk = min(self.batch_size, n)
                if chunk > 1 and self._resize(chunk):
                    parts = []
                    for start in range(0, n, chunk):
                        part = x[start : start + chunk]
                        if part.shape[0] < chunk:  # pad the last chunk: no second resize
                            pad = np.zeros((chunk - part.shape[0], *part.shape[1:]), x.dtype)
                            part = np.concatenate([part, pad])
                        parts.append(self._invoke_chunk(part))
                    out = np.concatenate(parts)[:n]
                else:
                    self._resize(1)
                    out = np.concatenate([self._invoke_chunk(x[i : i + 1]) for i in range(n)])
        out = out.reshape(n, -1)
        if self._out_lut is not None:
            out = self._out_lut[out.view(np.uint8)]
        elif self._out_quant is not None:
            scale, zero_point = self._out_quant
            out = (out.astype(np.float32) - zero_point) * scale
        else:
            out = out.astype(np.float32, copy=False)
        if self._probabilities is None and out.size:
            self._probabilities = _looks_like_probabilities(out)
        return out if self._probabilities is not False else _softmax(out)

    # ---------------------------------------------------------------------------- inputs
    def _shape_error(self, x: np.ndarray) -> InputShapeError:
        h, w, c = self.input_shape
        accepted = f"({h}, {w}, {c}) or (N, {h}, {w}, {c})"
        if c == 1:
            accepted = f"({h}, {w}), ({h}, {w}, 1), (N, {h}, {w}) or (N, {h}, {w}, 1)"
        return InputShapeError(
            f"The input array does not fit the model: expected shape {accepted}. Resize it, "
            f"or pass a PIL image or a path to have it preprocessed. "
            f"Received: shape={tuple(x.shape)}, dtype={x.dtype}"
        )

    def _array_batch(self, x: np.ndarray) -> np.ndarray:
        """An array of one image or a batch -> (N, H, W, C), same dtype."""
        shape = self.input_shape
        if x.shape == shape:
            return x[None]
        if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
            return x
        if shape[-1] == 1:
            if x.shape == shape[:-1]:
                return x[None, ..., None]
            if x.ndim == len(shape) and x.shape[1:] == shape[:-1]:
                return x[..., None]
        raise self._shape_error(x)

    def _image(self, item: Any, invert: str | None) -> np.ndarray:
        from PIL import Image

        from edge_runtime.preprocess import preprocess_image

        inv = self.invert if invert is None else invert
        if isinstance(item, Image.Image):
            return preprocess_image(
                item,
                self.input_shape,
                invert=inv,
                background=self.background,
                max_pixels=self.max_pixels,
            )
        return load_and_preprocess(
            item,
            self.input_shape,
            invert=inv,
            background=self.background,
            max_pixels=self.max_pixels,
        )

    def _to_tensor(self, x: Any, invert: str | None = None) -> np.ndarray:
        """Any accepted input -> (N, *feed) array in the input tensor's dtype."""
        if isinstance(x, np.ndarray):
            batch = self._array_batch(self._check_dtype(x))
        elif isinstance(x, (str, os.PathLike)) or _is_pil(x):
            batch = self._image(x, invert)[None]
        elif isinstance(x, Sequence) and not isinstance(x, (bytes, bytearray)) and len(x) > 0:
            items = []
            for item in x:
                if isinstance(item, np.ndarray):
                    items.append(self._array_batch(self._check_dtype(item)))
                elif isinstance(item, (str, os.PathLike)) or _is_pil(item):
                    items.append(self._image(item, invert)[None])
                else:
                    raise InputShapeError(
                        "A list passed to predict must hold arrays, PIL images or paths. "
                        f"Received: an item of type {type(item).__name__}"
                    )
            kinds = {a.dtype.kind == "f" for a in items}
            if len(kinds) > 1:
                raise InputShapeError(
                    "Do not mix uint8 (raw pixel) and float (model space) items in one list. "
                    "Received: both"
                )
            batch = np.concatenate(items)
        else:
            raise InputShapeError(
                "predict takes a uint8 or float array (one image or a batch), a PIL image, a "
                f"path, or a list of those. Received: {type(x).__name__}"
            )
        if batch.dtype == np.uint8:
            if self._shift is None:
                tensor = self._lut[batch]
            elif self._shift:
                tensor = (batch + self._shift).view(self.input_spec.dtype)
            else:
                tensor = batch.view(self.input_spec.dtype)
        else:
            tensor = _quantize(batch.astype(np.float32, copy=False), self.input_spec)
        return tensor.reshape(batch.shape[0], *self._feed_shape)

    def _check_dtype(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint8 or x.dtype.kind == "f":
            return x
        if x.dtype.kind in "iu" and x.size and x.min() >= 0 and x.max() <= 255:
            return x.astype(np.uint8)
        raise InputShapeError(
            "Input arrays must be uint8 (raw pixels 0-255) or float (already in the model's "
            f"input space). Cast the array. Received: dtype={x.dtype}, shape={tuple(x.shape)}"
        )

    # ------------------------------------------------------------------------------- API
    def predict_proba(self, x: Any, *, invert: str | None = None) -> np.ndarray:
        """Class probabilities, float32 (N, num_classes), for one image or a batch."""
        return self._run(self._to_tensor(x, invert))

    def predict(self, x: Any, *, invert: str | None = None) -> list[Prediction]:
        """One `Prediction` per image, for one image (array, PIL image, path) or a batch."""
        probs = self._run(self._to_tensor(x, invert))
        names = self.class_names
        if len(probs) == 1:
            row = probs[0]
            i = int(row.argmax())
            return [Prediction(i, names[i], float(row[i]), row, names)]
        best = probs.argmax(axis=1)
        return [
            Prediction(int(i), names[i], float(row[i]), row, names)
            for i, row in zip(best, probs, strict=True)
        ]

    def label(self, index: int) -> str:
        """The class name of `index` (its number as text when the model has no names)."""
        return self.class_names[index]

    def describe(self) -> dict[str, Any]:
        """What `info` prints: tensors, quantization, backend and metadata."""
        return {
            "model": str(self.path) if self.path else None,
            "size_bytes": self.size_bytes,
            "backend": self.backend.name,
            "backend_version": self.backend.version,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "image_shape": list(self.input_shape),
            "raw_pixel_scale": self.input_scale,
            "raw_pixel_offset": self.input_offset,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "dynamic_batch": self.input_spec.batch_resizable,
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        return (
            f"EdgeClassifier(path={str(self.path)!r}, input={self.input_shape} "
            f"{self.input_spec.dtype.name}, classes={self.num_classes}, "
            f"backend={self.backend.name} {self.backend.version})"
        )


def _is_pil(x: Any) -> bool:
    mod = type(x).__module__
    if not mod.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(x, Image.Image)

