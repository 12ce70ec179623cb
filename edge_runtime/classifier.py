"""`EdgeClassifier`: a .tflite image classifier behind one small, thread-safe API.

Input rule: a **uint8** array is raw pixels; a **float** array is already in the model's input
space. PIL images and paths are preprocessed (`edge_runtime.image.preprocess`) into raw pixels.
Every input becomes an (N, H, W, C) batch, and each chunk of `batch_size` images goes through
one conversion to the input tensor's values (`_to_tensor`):
- raw pixels into a float tensor: `pixels * scale + offset` in float32 (the metadata's
  `input.scale`/`offset`);
- raw pixels into an integer tensor: a 256-entry table built at load (the same float32
  values, then the tensor's quantization);
- floats: the tensor's quantization (none for a float tensor).

Outputs are dequantized, and get a softmax only when the model does not end in one. That is
decided once at load from the graph itself (`edge_runtime.metadata.graph`): the op that computes the
output (SOFTMAX or LOGISTIC: probabilities) or, failing that, the output's quantization
(TFLite's softmax quantization, scale 1/256). A model with one output unit is binary: its p
(after a sigmoid if it is a logit) becomes two classes, [1 - p, p] (`edge_runtime.scores`).
One interpreter serves all threads behind a lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edge_runtime.backends import Backend, Interpreter, load_backend
from edge_runtime.errors import InputShapeError, ModelFileError
from edge_runtime.image.fastpath import single_image_tables
from edge_runtime.image.preprocess import MAX_PIXELS, load_and_preprocess, preprocess_image
from edge_runtime.image.scaling import raw_pixel_scaling
from edge_runtime.metadata.block import read_embedded_metadata, read_model_bytes, read_sidecar
from edge_runtime.metadata.graph import PROBABILITY_HEADS, is_softmax_quantization, output_head
from edge_runtime.metadata.labels import Labels, resolve_labels
from edge_runtime.metadata.standard import StandardMetadata, read_standard_metadata, usable_labels
from edge_runtime.model_bounds import DEFAULT_MAX_MODEL_MB, check_model_memory
from edge_runtime.options import normalize_invert, positive_int
from edge_runtime.prediction import Prediction
from edge_runtime.scores import as_probabilities, class_count
from edge_runtime.tensors import TensorSpec

if TYPE_CHECKING:
    import numpy.typing as npt

DEFAULT_BATCH_SIZE = 256
_UINT8 = np.dtype(np.uint8)


def _quantize(values: npt.NDArray[Any], spec: TensorSpec) -> npt.NDArray[Any]:
    """Model-space floats -> what the tensor holds (its dtype, its quantization)."""
    if spec.dtype.kind == "f":
        return values.astype(spec.dtype, copy=False)
    info = np.iinfo(spec.dtype)
    if spec.quantized:
        values = values / spec.scale + spec.zero_point
    rounded: npt.NDArray[Any] = np.clip(np.rint(values), info.min, info.max)
    return rounded.astype(spec.dtype)


class EdgeClassifier:
    """A TFLite image classifier: `load`, then `predict` / `predict_proba`. Thread-safe."""

    def __init__(
        self,
        interpreter: Interpreter,
        backend: Backend,
        *,
        metadata: dict[str, Any] | None = None,
        path: Path | None = None,
        size_bytes: int = 0,
        num_threads: int | None = None,
        invert: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = MAX_PIXELS,
        labels: Labels | None = None,
        output_head: str | None = None,
        standard: StandardMetadata | None = None,
    ) -> None:
        self._interp: Interpreter = interpreter
        self.standard = standard
        self.backend = backend
        self.metadata = metadata
        self.path = path
        self.size_bytes = size_bytes
        self.num_threads = positive_int(num_threads, "num_threads", optional=True)
        self.invert = normalize_invert(invert)
        self.max_pixels = positive_int(max_pixels, "max_pixels")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.output_head = output_head
        # False: decode and convert photos in full before resizing (`--full-decode`), not at
        # the model's size (edge_runtime.image.shrink)
        self.decode_to_size = True
        self._lock = threading.Lock()
        self._setup_tensors()
        self._setup_names(labels)
        self._setup_pixels()
        out = self.output_spec
        self._dequantize = (
            (np.float32(out.zero_point), np.float32(out.scale)) if out.quantized else None
        )
        self.outputs_probabilities = output_head in PROBABILITY_HEADS or (
            out.quantized and is_softmax_quantization(out.dtype.name, out.scale, out.zero_point)
        )
        # Probabilities as they come out (one check per call): a softmax head of 2+ classes.
        self._final = self.outputs_probabilities and self.output_units > 1
        fast = single_image_tables(self)  # predict's one-image path (edge_runtime.image.fastpath)
        self._fast_table, xor, self._fast_shapes, self._fast_feed, self._fast_scores = fast
        self._fast_buffer = np.zeros(self._fast_feed, np.int8)
        self._fast_xor: dict[tuple[int, ...], npt.NDArray[np.uint8]] | Literal[False] = False
        if xor:  # each accepted image shape -> a uint8 view of the buffer
            raw = self._fast_buffer.view(np.uint8)
            self._fast_xor = {shape: raw.reshape(shape) for shape in self._fast_shapes}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        num_threads: int | None = None,
        backend: str | None = None,
        *,
        labels: Labels | None = None,
        invert: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = MAX_PIXELS,
        max_model_mb: float = DEFAULT_MAX_MODEL_MB,
    ) -> EdgeClassifier:
        """Read a .tflite file (and its `edgeship` metadata or sidecar) into a classifier.

        `labels`: a labels file (one class name per line, output order) or a list of names;
        they replace the metadata's class names. `max_model_mb`: model_bounds.py.
        """
        # Options first (OptionError, exit 2 in the CLIs), before any file or interpreter work.
        num_threads = positive_int(num_threads, "num_threads", optional=True)
        invert = normalize_invert(invert)
        positive_int(batch_size, "batch_size")
        positive_int(max_pixels, "max_pixels")
        path = Path(path)
        data = read_model_bytes(path)
        check_model_memory(data, max_model_mb, 1, f"path={path}")  # before any allocation
        metadata = read_embedded_metadata(data, f"path={path}", lenient=True)
        if metadata is None:
            metadata = read_sidecar(path)
        standard = read_standard_metadata(data, f"path={path}")
        chosen = load_backend(backend)
        try:
            interpreter = chosen.make_interpreter(data, num_threads)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(
                f"The {chosen.name} interpreter cannot load the model ({_first_line(err)}). "
                f"The file may be truncated or use unsupported ops. Received: path={path}"
            ) from None
        outputs = interpreter.get_output_details()
        head = output_head(data, int(outputs[0]["index"]), f"path={path}") if outputs else None
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
            labels=labels,
            output_head=head,
            standard=standard,
        )

    # ----------------------------------------------------------------------------- setup
    def _setup_tensors(self) -> None:
        """Input/output specs, the image shape (H, W, C) and the number of classes."""
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(
                "Expected a classifier with exactly one input and at least one output. "
                f"Received: {len(inputs)} inputs, {len(outputs)} outputs, path={self.path}"
            )
        self.input_spec = TensorSpec.from_details(inputs[0])
        self.output_spec = TensorSpec.from_details(outputs[0])
        self._input_index, self._output_index = self.input_spec.index, self.output_spec.index
        tensor_shape = self.input_spec.shape
        self._feed_shape = tuple(tensor_shape[1:])
        meta_shape = ((self.metadata or {}).get("input") or {}).get("shape")
        if len(tensor_shape) == 4:
            image_shape = self._feed_shape
        elif len(tensor_shape) == 3:
            image_shape = (*self._feed_shape, 1)
        elif len(tensor_shape) == 2 and meta_shape and int(np.prod(meta_shape)) == tensor_shape[1]:
            image_shape = tuple(meta_shape)  # a flat input: the metadata knows the image
        else:
            raise ModelFileError(
                "Expected an image model: input (batch, H, W, C) or (batch, H, W). "
                f"Received: input shape={list(tensor_shape)}, path={self.path}"
            )
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in image_shape)
        # A one-channel model also takes (H, W) images and (N, H, W) batches.
        self._gray_shape = self.input_shape[:-1] if self.input_shape[-1] == 1 else None
        self._one_image = (1, *self.input_shape)  # a batch of one
        # One output unit is a binary classifier (a sigmoid): two classes, [1 - p, p].
        self.output_units = int(np.prod(self.output_spec.shape[1:] or self.output_spec.shape))
        self.num_classes = class_count(self.output_units)
        self._allocated_batch = int(tensor_shape[0])

    def _setup_names(self, labels: Labels | None) -> None:
        """Class names: `labels` if given, else edgeship's block's, else the standard
        metadata's packed labels file, else the indices as text (`names_source` says which)."""
        names = (self.metadata or {}).get("class_names")
        packed = usable_labels(self.standard, self.num_classes, f"path={self.path}")
        if labels is not None:
            where = f"path={self.path}"
            if self.output_units == 1:
                where += " (one sigmoid output: a binary model, class 0 then class 1)"
            self.class_names = resolve_labels(labels, self.num_classes, where)
            self.names_source = "labels file" if isinstance(labels, (str, os.PathLike)) else "names"
        elif isinstance(names, list) and len(names) == self.num_classes:
            self.class_names = tuple(str(n) for n in names)
            self.names_source = "edgeship metadata"
        elif packed is not None:
            self.class_names = packed
            self.names_source = "standard metadata"
        else:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
            self.names_source = "indices"

    def _setup_pixels(self) -> None:
        """How raw pixels become tensor values: the metadata's scaling, then the 256 table."""
        meta_input = (self.metadata or {}).get("input") or {}
        self.background = meta_input.get("background")
        self.resize_rule = meta_input.get("resize", "stretch")
        scale, offset, self.scaling_source = raw_pixel_scaling(
            meta_input, self.input_spec, self.standard, self.input_shape[-1]
        )
        self.input_scale, self.input_offset = scale, offset
        self._scale32 = np.asarray(scale, np.float32)[()]
        self._offset32 = np.asarray(offset, np.float32)[()]
        self._has_offset = bool(np.any(self._offset32 != 0))
        self._float_input = self.input_spec.dtype.kind == "f"
        # pixel value -> tensor value, for all 256: the float32 values `_to_tensor` computes
        # for a float tensor, then quantized for an integer one (per channel: (256, C))
        self._per_channel = np.ndim(self._scale32) > 0
        pixels = np.arange(256, dtype=np.uint8)
        values = (pixels[:, None] if self._per_channel else pixels) * self._scale32
        self._lut = _quantize(values + self._offset32, self.input_spec)
        self._channels = np.arange(self.input_shape[-1])

    # ------------------------------------------------------------------------------ API
    def predict_proba(self, x: Any, *, invert: str | None = None) -> npt.NDArray[np.float32]:
        """Class probabilities, float32 (N, num_classes), for one image or a batch."""
        return self._probabilities(self._invoke(self._batch(x, invert)))

    def predict(self, x: Any, *, invert: str | None = None) -> list[Prediction]:
        """One `Prediction` per image, for one image (array, PIL image, path) or a batch."""
        names = self.class_names
        if type(x) is np.ndarray and x.dtype is _UINT8 and x.shape in self._fast_shapes:
            # One uint8 image (the common call): one table lookup, one invoke.
            row = self._fast_one(x)
            i = int(row.argmax())
            return [Prediction(i, names[i], row.item(i), row, names)]
        probs = self._probabilities(self._invoke(self._batch(x, invert)))
        predictions = []
        for n in range(len(probs)):
            row = probs[n]
            i = int(row.argmax())
            predictions.append(Prediction(i, names[i], row.item(i), row, names))
        return predictions

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
            "output_head": self.output_head,
            "outputs_probabilities": self.outputs_probabilities,
            "image_shape": list(self.input_shape),
            "raw_pixel_scale": _plain(self.input_scale),
            "raw_pixel_offset": _plain(self.input_offset),
            "raw_pixel_scaling_source": self.scaling_source,
            "resize": self.resize_rule,
            "num_classes": self.num_classes,
            "output_units": self.output_units,
            "class_names": list(self.class_names),
            "class_names_source": self.names_source,
            "dynamic_batch": self.input_spec.batch_resizable,
            "metadata": self.metadata,
            "standard_metadata": self.standard.to_dict() if self.standard else None,
        }

    def __repr__(self) -> str:
        return (
            f"EdgeClassifier(path={str(self.path)!r}, input={self.input_shape} "
            f"{self.input_spec.dtype.name}, classes={self.num_classes}, "
            f"backend={self.backend.name} {self.backend.version})"
        )

    # ---------------------------------------------------------------------------- inputs
    def _batch(self, x: Any, invert: str | None) -> npt.NDArray[Any]:
        """Any accepted input -> an (N, H, W, C) array: uint8 pixels or model-space floats."""
        if isinstance(x, np.ndarray):
            return self._array_batch(x)
        if isinstance(x, (str, os.PathLike)) or _is_pil(x):
            return self._image(x, invert)[None]
        if isinstance(x, Sequence) and not isinstance(x, (bytes, bytearray)) and len(x) > 0:
            items = [
                self._image(item, invert)[None]
                if isinstance(item, (str, os.PathLike)) or _is_pil(item)
                else self._array_batch(item)
                for item in x
            ]
            if len({a.dtype.kind == "f" for a in items}) > 1:
                raise InputShapeError(
                    "Do not mix uint8 (raw pixel) and float (model space) items in one list. "
                    "Received: both"
                )
            return np.concatenate(items)
        raise InputShapeError(
            "predict takes a uint8 or float array (one image or a batch), a PIL image, a "
            f"path, or a list of those. Received: {type(x).__name__}"
        )

    def _array_batch(self, x: object) -> npt.NDArray[Any]:
        """An array of one image or a batch -> (N, H, W, C): uint8, or float for model input."""
        if not isinstance(x, np.ndarray):
            raise InputShapeError(
                "A list passed to predict must hold arrays, PIL images or paths. "
                f"Received: an item of type {type(x).__name__}"
            )
        if x.dtype != _UINT8 and x.dtype.kind != "f":
            if x.dtype.kind not in "iu" or not x.size or x.min() < 0 or x.max() > 255:
                raise InputShapeError(
                    "Input arrays must be uint8 (raw pixels 0-255) or float (already in the "
                    f"model's input space). Cast the array. Received: dtype={x.dtype}, "
                    f"shape={tuple(x.shape)}"
                )
            x = x.astype(np.uint8)
        shape, gray = self.input_shape, self._gray_shape
        if x.shape == shape:
            return x[None]
        if x.shape == gray:
            return x.reshape(self._one_image)
        if x.shape[1:] == shape:
            return x
        if x.shape[1:] == gray:
            return x[..., None]
        h, w, c = shape
        accepted = f"({h}, {w}, {c}) or (N, {h}, {w}, {c})"
        if c == 1:
            accepted = f"({h}, {w}), ({h}, {w}, 1), (N, {h}, {w}) or (N, {h}, {w}, 1)"
        raise InputShapeError(
            f"The input array does not fit the model: expected shape {accepted}. Resize it, "
            f"or pass a PIL image or a path to have it preprocessed. "
            f"Received: shape={tuple(x.shape)}, dtype={x.dtype}"
        )

    def _image(self, item: Any, invert: str | None) -> npt.NDArray[Any]:
        """A PIL image or an image file -> uint8 (H, W, C) pixels, the model's way."""
        options = {
            "invert": self.invert if invert is None else invert,
            "background": self.background,
            "max_pixels": self.max_pixels,
            "resize": self.resize_rule,
            "to_size": self.decode_to_size,
        }
        if _is_pil(item):
            return preprocess_image(item, self.input_shape, **options)
        return load_and_preprocess(item, self.input_shape, **options)

    def _to_tensor(self, images: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(k, H, W, C) uint8 pixels or model-space floats -> the input tensor's values."""
        if images.dtype != _UINT8:
            values = _quantize(images.astype(np.float32, copy=False), self.input_spec)
        elif self._float_input:
            values = images * self._scale32
            if self._has_offset:
                values += self._offset32
        elif self._per_channel:
            values = self._lut[images, self._channels]
        else:
            values = self._lut.take(images)
        if self._feed_shape != self.input_shape:  # a (batch, H, W) or flat input tensor
            values = values.reshape(len(images), *self._feed_shape)
        return values

    # ------------------------------------------------------------------------- interpreter
    def _invoke(self, images: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """(N, H, W, C) images -> the raw output tensor rows (N, ...), `batch_size` at a time.

        The interpreter's input is resized to the chunk size when the model allows a dynamic
        batch (else it runs one image at a time); a short last chunk is padded, not resized.
        """
        n = len(images)
        chunk = n if n <= self.batch_size else self.batch_size
        with self._lock:
            if chunk != self._allocated_batch:
                chunk = self._resize(chunk)
            if chunk == n:  # one invoke: one image, or a batch that fits
                return self._run_chunk(self._to_tensor(images))
            out: npt.NDArray[Any]  # made at the first chunk
            for start in range(0, n, chunk):
                tensor = self._to_tensor(images[start : start + chunk])
                k = len(tensor)
                if k < chunk:  # pad the last chunk rather than resize the interpreter again
                    pad = np.zeros((chunk - k, *self._feed_shape), tensor.dtype)
                    tensor = np.concatenate([tensor, pad])
                result = self._run_chunk(tensor)
                if start == 0:
                    out = np.empty((n, *result.shape[1:]), result.dtype)
                out[start : start + k] = result[:k]
        return out

    def _fast_one(self, image: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One uint8 image of `_fast_shapes` -> its float32 probabilities: `_invoke` and
        `_probabilities` of a batch of one, without their per-call checks."""
        interp = self._interp
        with self._lock:  # the XOR's buffer is shared: filled under the lock
            if self._allocated_batch != 1:
                self._resize(1)
            if self._fast_xor:  # the table is pixel - 128 in int8 (edgeship's int8 input)
                np.bitwise_xor(image, 0x80, out=self._fast_xor[image.shape])
                interp.set_tensor(self._input_index, self._fast_buffer)
            else:
                tensor = self._fast_table.take(image).reshape(self._fast_feed)
                interp.set_tensor(self._input_index, tensor)
            interp.invoke()
            out = interp.get_tensor(self._output_index)
        if self._fast_scores is not None:  # a 256-entry dequantization table
            return self._fast_scores.take(out.reshape(-1))
        if self._final and self._dequantize is None and out.dtype == np.float32:
            return out.reshape(-1)
        row: npt.NDArray[np.float32] = self._probabilities(out)[0]
        return row

    def _run_chunk(self, tensor: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """One `invoke` on input values of the allocated batch size (lock held); the output,
        copied out of the interpreter (`get_tensor` copies: no view of its buffers is kept)."""
        interp = self._interp
        interp.set_tensor(self._input_index, tensor)
        interp.invoke()
        return interp.get_tensor(self._output_index)

    def _resize(self, n: int) -> int:
        """Make the input batch `n` if the model allows it (lock held); the batch in effect."""
        if not self.input_spec.batch_resizable:
            n = 1  # a fixed batch-1 model: one image per invoke
            if self._allocated_batch == 1:
                return 1
        try:
            self._interp.resize_tensor_input(self.input_spec.index, [n, *self._feed_shape])
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(
                f"The interpreter cannot run a batch of {n} ({_first_line(err)}). "
                f"Received: path={self.path}"
            ) from None
        self._allocated_batch = n
        return n

    def _probabilities(self, out: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Raw output rows -> float32 probabilities (N, num_classes)."""
        scores = out if out.ndim == 2 else out.reshape(len(out), -1)
        if self._dequantize is not None:
            zero_point, scale = self._dequantize
            scores = (scores.astype(np.float32) - zero_point) * scale
        else:
            scores = scores.astype(np.float32, copy=False)
        if self._final:
            return scores
        return as_probabilities(scores, self.outputs_probabilities)


def _plain(value: Any) -> float | list[float]:
    """A scale or offset as JSON: a float, or a list of floats (one per channel)."""
    return [float(v) for v in value] if np.ndim(value) else float(value)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


def _is_pil(x: Any) -> bool:
    if not type(x).__module__.startswith("PIL."):
        return False
    from PIL import Image

    return isinstance(x, Image.Image)
