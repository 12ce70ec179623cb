"""`EdgeClassifier`: a .tflite image classifier behind one small, thread-safe API.

Input rule: a **uint8** array is raw pixels (the metadata's `input.scale`/`input.offset` are
applied, then the input tensor's quantization); a **float** array is already in the model's
input space (only the tensor's quantization is applied). PIL images and paths are
preprocessed (`edge_runtime.preprocess`) into raw pixels first.

Raw pixels go through a 256-entry lookup table built once at load (pixel -> the exact value
the input tensor wants), so the per-call cost is one indexing op, whatever the quantization.
One interpreter serves all threads behind a lock; batches are fed in chunks of `batch_size`
by resizing the input tensor when the model allows a dynamic batch.

Speed: `predict`/`predict_proba` on ONE uint8 image take a fast path (closures built at
load, `bytes.translate` instead of numpy calls, lazily dequantized `probabilities`) whose cost
is measured against the bare `set_tensor` + `invoke` + `get_tensor` round trip by
`benchmarks/edge_speed.py`. Everything that does not depend on the pixels is decided once at
load: the input and output tables, whether a softmax is needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends import Backend, load_backend
from edge_runtime.errors import InputShapeError, ModelFileError
from edge_runtime.metadata import read_embedded_metadata, read_model_bytes, read_sidecar
from edge_runtime.options import normalize_invert, positive_int
from edge_runtime.preprocess import MAX_PIXELS, load_and_preprocess
from edge_runtime.tensors import TensorSpec

DEFAULT_BATCH_SIZE = 256
_PROB_TOLERANCE = 0.05


@dataclass(frozen=True, eq=False, slots=True)
class Prediction:
    """One image's answer: the top class `index`, its `label`, `confidence` and all scores.

    `probabilities` (float32, one per class) may be filled in on first access: the one-image
    fast path of `EdgeClassifier.predict` keeps the raw output bytes and dequantizes them only
    when asked (most callers read just `label`/`confidence`).
    """

    index: int
    label: str
    confidence: float
    probabilities: np.ndarray
    class_names: tuple[str, ...] = field(default=(), repr=False)
    # While `probabilities` is not computed: (256-entry float32 table, one byte per class),
    # or (None, the float32 output tensor) whose flattened view is the probabilities.
    _pending: tuple[np.ndarray | None, bytes | np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.probabilities):
            raise ValueError(
                f"index must be in [0, {len(self.probabilities)}). Received: index={self.index}"
            )

    def __getattr__(self, name: str) -> Any:
        # Only reached for an unset slot, i.e. `probabilities` left pending by the fast path.
        if name != "probabilities":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        pending = _GET_PENDING(self)
        if pending is not None:  # None: another thread filled them in meanwhile
            table, raw = pending
            _SET_PROBABILITIES(
                self,
                raw.reshape(-1) if table is None else table[np.frombuffer(raw, np.uint8)],
            )
            _SET_PENDING(self, None)  # done: asdict()/pickle then see a plain Prediction
        return _GET_PROBABILITIES(self)

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


# `Prediction` without `__init__`/`__post_init__`, for values the classifier made itself (its
# index is an argmax, so in range). A frozen dataclass's `__init__` sets each field through
# `object.__setattr__` by name and then validates: a large share of predict()'s own overhead
# on one image. The slot descriptors' setters write the fields directly.
_SET_INDEX, _SET_LABEL, _SET_CONFIDENCE, _SET_PROBABILITIES, _SET_NAMES, _SET_PENDING = (
    Prediction.__dict__[name].__set__
    for name in ("index", "label", "confidence", "probabilities", "class_names", "_pending")
)
_GET_PROBABILITIES = Prediction.__dict__["probabilities"].__get__
_GET_PENDING = Prediction.__dict__["_pending"].__get__


def _trusted_prediction(
    index: int, label: str, confidence: float, probabilities: np.ndarray, names: tuple[str, ...]
) -> Prediction:
    pred = object.__new__(Prediction)
    _SET_INDEX(pred, index)
    _SET_LABEL(pred, label)
    _SET_CONFIDENCE(pred, confidence)
    _SET_PROBABILITIES(pred, probabilities)
    _SET_NAMES(pred, names)
    _SET_PENDING(pred, None)
    return pred


_UINT8 = np.dtype(np.uint8)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def _looks_like_probabilities(scores: np.ndarray) -> bool:
    """True if every row is a distribution (the model ends in softmax)."""
    return bool(
        scores.min() >= -1e-6 and np.abs(scores.sum(axis=1) - 1.0).max() <= _PROB_TOLERANCE
    )


def _exact_affine(lut: np.ndarray, scale: float, offset: float) -> tuple | None:
    """`(ufunc, constant, offset)` whose float32 steps on `float32(p)` (then `+ offset` unless
    it is None) give `lut[p]` bit for bit for every pixel p, or None (then the table is used).

    A float32 cast plus one or two in-place ufuncs over an image is several times cheaper than
    numpy's gather through the 256-entry table (`take` converts the indices to intp first).
    The check covers all 256 pixel values, so the result is the table's, exactly.
    """
    if lut.dtype != np.float32 or not np.isfinite(lut).all() or scale == 0:
        return None
    pixels = np.arange(256, dtype=np.float32)
    add = np.float32(offset) if offset else None
    for ufunc, constant in ((np.multiply, np.float32(scale)), (np.divide, np.float32(1 / scale))):
        values = ufunc(pixels, constant)
        if add is not None:
            values = values + add
        if np.array_equal(values.view(np.uint32), lut.view(np.uint32)):
            return ufunc, constant, add
    return None


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
        self.num_threads = positive_int(num_threads, "num_threads", optional=True)
        self.invert = normalize_invert(invert)
        self.max_pixels = positive_int(max_pixels, "max_pixels")
        batch_size = positive_int(batch_size, "batch_size")
        self._lock = threading.Lock()
        self._setup(batch_size)

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
        # Options first (OptionError, exit 2 in the CLIs), before any file or interpreter work.
        num_threads = positive_int(num_threads, "num_threads", optional=True)
        invert = normalize_invert(invert)
        batch_size = positive_int(batch_size, "batch_size")
        max_pixels = positive_int(max_pixels, "max_pixels")
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
        # Float input tensor: raw pixels -> model input as a float32 cast plus in-place ufuncs
        # when those give the table's values exactly (checked here on all 256), else `take`.
        self._affine = _exact_affine(self._lut, self.input_scale, self.input_offset)
        self._in_index = self.input_spec.index
        self._out_index = self.output_spec.index
        self._out_quant = (
            (np.float32(self.output_spec.scale), np.float32(self.output_spec.zero_point))
            if self.output_spec.quantized
            else None
        )
        # 1-byte quantized outputs dequantize through a 256-entry table indexed by the bytes
        # (`take(..., mode="wrap")` also accepts the int8 codes as they are: -56 -> entry 200).
        self._out_lut: np.ndarray | None = None
        if self._out_quant is not None and self.output_spec.dtype.itemsize == 1:
            codes = np.arange(256, dtype=np.uint8).view(self.output_spec.dtype)
            scale, zero_point = self._out_quant
            self._out_lut = ((codes.astype(np.float32) - zero_point) * scale).astype(np.float32)
        self._allocated_batch = int(tensor_shape[0]) if tensor_shape else 1
        self._can_batch: bool | None = True if self.input_spec.batch_resizable else None
        self.batch_size = batch_size
        # One-image fast path (uint8 pixels of one of these shapes): the pixels are quantized
        # into a batch-1 staging array in the tensor's dtype (no allocation per call), which
        # `set_tensor` then copies in.
        shapes = {self.input_shape}
        if self.input_shape[-1] == 1:
            shapes.add(self.input_shape[:-1])
        self._single_shapes = frozenset(shapes)
        self._stage = np.zeros((1, *feed), self.input_spec.dtype)
        # 1-byte input tensor: quantize with `bytes.translate` through the 256-byte table, a
        # plain C loop, cheaper here than any numpy call (whose fixed cost, ~0.5-1 us on this
        # class of machine, is a quarter of the whole interpreter round trip). tobytes() is in
        # C order whatever x's strides: the tensor's layout.
        self._in_table = self._lut.view(np.uint8).tobytes() if self._lut.itemsize == 1 else None
        self._invoke_single = self._make_invoke_single()
        # Whether the outputs are already probabilities (softmax head) or need a softmax:
        # decided here, once, from two probe images, not per call.
        self._needs_softmax = False
        try:
            self._needs_softmax = not self._probe_probabilities()
        except (ValueError, RuntimeError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ModelFileError(
                f"The interpreter cannot run the model ({first_line}). The file may be "
                f"truncated or use unsupported ops. Received: {where}"
            ) from None
        # The fast path's output step when it is one table lookup (1-byte output, softmax head).
        self._row_table = self._out_lut if not self._needs_softmax else None
        # (float32 output with a softmax head: the row from `get_tensor` as it is.)
        float_out = (
            self.output_spec.dtype == np.float32
            and self._out_quant is None
            and len(self.output_spec.shape) in (1, 2)
        )
        self._predict_one = (
            self._make_predict_one()
            if self._row_table is not None or (float_out and not self._needs_softmax)
            else None
        )

    def _probe_probabilities(self) -> bool:
        """True if the model's outputs are probabilities: a black and a noise image, at load."""
        # Fixed pseudo-noise without `np.random` (its import alone costs ~10 ms of cold load).
        size = int(np.prod(self.input_shape))
        noise = (np.arange(size) * 7919 % 251).astype(np.uint8).reshape(self.input_shape)
        rows = [
            self._dequantize(self._invoke_single(image))
            for image in (np.zeros(self.input_shape, np.uint8), noise)
        ]
        return _looks_like_probabilities(np.concatenate(rows))

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

    def _single_views(self) -> dict[tuple[int, ...], np.ndarray]:
        """The batch-1 staging array reshaped to each `_single_shapes` shape (views)."""
        return {shape: self._stage.reshape(shape) for shape in self._single_shapes}

    def _make_invoke_single(self) -> Callable[[np.ndarray], np.ndarray]:
        """`invoke_single(x)`: one uint8 image (a `_single_shapes` shape) -> raw output (a copy).

        A closure over everything fixed at load (bound methods, indices, tables, `stage`),
        because each `self.` lookup or bound-method creation costs ~30-50 ns and the issue's
        budget for all of predict()'s own work on a small model is ~1.5 us. The interpreter's
        bound methods hold no tensor views, so `invoke()`'s check for live views still passes.
        The input step (same in `_make_predict_one`): `bytes.translate` for a 1-byte tensor;
        for a float tensor a cast into the staging array plus the in-place ufuncs of
        `_exact_affine`; else `take` through the table.
        """
        lock, resize = self._lock, self._resize
        interp = self._interp
        set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
        in_index, out_index = self._in_index, self._out_index
        lut, stage, table = self._lut, self._stage, self._in_table
        stage_bytes, views = memoryview(stage).cast("B"), self._single_views()
        ufunc, constant, add = self._affine or (None, None, None)
        add_ = np.add

        def invoke_single(x: np.ndarray) -> np.ndarray:
            with lock:  # the interpreter and the staging array are shared
                if self._allocated_batch != 1:
                    resize(1)
                if table is not None:
                    stage_bytes[:] = x.tobytes().translate(table)
                elif ufunc is not None:
                    view = views[x.shape]
                    view[...] = x  # uint8 -> float32, exact
                    ufunc(view, constant, out=view)
                    if add is not None:
                        add_(view, add, out=view)
                else:
                    # mode="clip" (uint8 never indexes past 256 entries) lets `take` write
                    # into `out` directly; the default mode="raise" goes through a buffer.
                    lut.take(x, out=views[x.shape], mode="clip")
                set_tensor(in_index, stage)
                invoke()
                return get_tensor(out_index)

        return invoke_single

    def _make_predict_one(self) -> Callable[[np.ndarray], list[Prediction]]:
        """`predict` of one uint8 image for a softmax head, all in one closure (see
        `_make_invoke_single` for why and for the input step).

        1-byte output: no numpy after `invoke`. The output bytes are translated to "rank keys"
        whose byte order is the order of the dequantized values (int8: flip the sign bit;
        uint8: as is), so `max()` and `.index()` on the bytes give the argmax, and a 256-entry
        table indexed by key dequantizes (lazily). Float32 output: the row `get_tensor`
        returned (already a copy) is the probabilities, as is.
        """
        lock, resize = self._lock, self._resize
        interp = self._interp
        set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor
        in_index, out_index = self._in_index, self._out_index
        lut, stage, in_table = self._lut, self._stage, self._in_table
        stage_bytes, views = memoryview(stage).cast("B"), self._single_views()
        ufunc, constant, add = self._affine or (None, None, None)
        add_ = np.add
        byte_out = self._row_table is not None
        nested = len(self.output_spec.shape) == 2
        flip = 0x80 if self.output_spec.dtype == np.int8 else 0
        to_key = bytes(b ^ flip for b in range(256))
        by_key = self._out_lut[np.arange(256) ^ flip] if byte_out else None
        confidences = by_key.tolist() if byte_out else None
        names = self.class_names
        new = object.__new__

        def predict_one(x: np.ndarray) -> list[Prediction]:
            with lock:  # the same locked steps as `_make_invoke_single`'s
                if self._allocated_batch != 1:
                    resize(1)
                if in_table is not None:
                    stage_bytes[:] = x.tobytes().translate(in_table)
                elif ufunc is not None:
                    view = views[x.shape]
                    view[...] = x
                    ufunc(view, constant, out=view)
                    if add is not None:
                        add_(view, add, out=view)
                else:
                    lut.take(x, out=views[x.shape], mode="clip")
                set_tensor(in_index, stage)
                invoke()
                out = get_tensor(out_index)
            pred = new(Prediction)  # `_trusted_prediction`, inlined
            if byte_out:
                keys = out.tobytes().translate(to_key)
                best = max(keys)
                i = keys.index(best)  # the first maximum, like argmax
                _SET_CONFIDENCE(pred, confidences[best])
                _SET_PENDING(pred, (by_key, keys))
            else:  # one numpy call (each costs ~0.3-0.5 us right after `invoke`)
                row = out.tolist()[0] if nested else out.tolist()
                best = max(row)  # the first maximum, like argmax (finite scores)
                i = row.index(best)
                _SET_CONFIDENCE(pred, best)
                _SET_PENDING(pred, (None, out))  # probabilities: out.reshape(-1), on access
            _SET_INDEX(pred, i)
            _SET_LABEL(pred, names[i])
            _SET_NAMES(pred, names)
            return [pred]

        return predict_one

    def _single_row(self, x: np.ndarray) -> np.ndarray:
        """One uint8 image -> its float32 probabilities, shape (num_classes,)."""
        out = self._invoke_single(x)
        table = self._row_table
        if table is not None:
            return table.take(out.reshape(-1), mode="wrap")
        return self._scores(out.reshape(1, -1))[0]

    def _dequantize(self, out: np.ndarray) -> np.ndarray:
        """Raw output tensor -> float32 scores (n, num_classes), before any softmax."""
        out = out.reshape(len(out), -1)
        if self._out_lut is not None:
            return self._out_lut[out.view(np.uint8)]
        if self._out_quant is not None:
            scale, zero_point = self._out_quant
            return (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32, copy=False)

    def _scores(self, out: np.ndarray) -> np.ndarray:
        """Raw output tensor -> float32 probabilities (n, num_classes)."""
        scores = self._dequantize(out)
        return _softmax(scores) if self._needs_softmax else scores

    def _fill(self, dst: np.ndarray, src: np.ndarray) -> None:
        """Raw uint8 images (k, H, W, C) -> `dst` (k, *feed): the input tensor's values."""
        src = src.reshape(dst.shape)
        if self._affine is not None:
            ufunc, constant, add = self._affine
            dst[...] = src  # uint8 -> float32, exact; then in place, no temporaries
            ufunc(dst, constant, out=dst)
            if add is not None:
                np.add(dst, add, out=dst)
        elif self._shift is not None:
            np.add(src, self._shift, out=dst.view(np.uint8))  # wraps modulo 256
        else:
            self._lut.take(src, out=dst, mode="clip")

    def _run(self, x: np.ndarray, raw: bool = False) -> np.ndarray:
        """(n, *feed) tensor-ready input, or (n, H, W, C) uint8 pixels when `raw` ->
        float32 scores (n, num_classes).

        Fed in chunks of `batch_size`. Raw pixels are converted chunk by chunk into one
        staging array (cache-sized, reused), not as a whole-batch temporary; the outputs go
        straight into the result array.
        """
        n = x.shape[0]
        interp, in_index, out_index = self._interp, self._in_index, self._out_index
        with self._lock:
            chunk = min(self.batch_size, n)
            if chunk == 1 or not self._resize(chunk):
                chunk = 1
                self._resize(1)
            stage = out = None
            for start in range(0, n, chunk):
                part = x[start : start + chunk]
                k = part.shape[0]
                if raw or k < chunk:
                    if stage is None:
                        stage = (
                            self._stage
                            if chunk == 1
                            else np.empty((chunk, *self._feed_shape), self.input_spec.dtype)
                        )
                    if raw:
                        self._fill(stage[:k], part)
                    else:
                        stage[:k] = part
                    if k < chunk:  # pad the last chunk: no second resize
                        stage[k:] = 0
                    part = stage
                interp.set_tensor(in_index, part)
                interp.invoke()
                result = interp.get_tensor(out_index)
                if out is None:
                    out = np.empty((n, *result.shape[1:]), result.dtype)
                out[start : start + k] = result[:k]
        return self._scores(out.reshape(n, -1))

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

    def _to_tensor(self, x: Any, invert: str | None = None) -> tuple[np.ndarray, bool]:
        """Any accepted input -> ((N, *feed) array in the input tensor's dtype, False), or
        ((N, H, W, C) uint8 raw pixels, True) for `_run` to convert."""
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
            if self._shift is None or self._shift:
                return batch, True  # converted chunk by chunk in `_run`
            tensor = batch.view(self.input_spec.dtype)  # uint8 tensor taking raw pixels
        else:
            tensor = _quantize(batch.astype(np.float32, copy=False), self.input_spec)
        return tensor.reshape(batch.shape[0], *self._feed_shape), False

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
    # Fast path test, in both methods: exactly an ndarray of uint8 (`is`: numpy's uint8 dtype
    # is a singleton; an equal-but-distinct dtype object just takes the general path) of a
    # single-image shape. Everything else goes through `_to_tensor`.
    def predict_proba(self, x: Any, *, invert: str | None = None) -> np.ndarray:
        """Class probabilities, float32 (N, num_classes), for one image or a batch."""
        if type(x) is np.ndarray and x.dtype is _UINT8 and x.shape in self._single_shapes:
            return self._single_row(x)[None]
        return self._run(*self._to_tensor(x, invert))

    def predict(self, x: Any, *, invert: str | None = None) -> list[Prediction]:
        """One `Prediction` per image, for one image (array, PIL image, path) or a batch."""
        if type(x) is np.ndarray and x.dtype is _UINT8 and x.shape in self._single_shapes:
            predict_one = self._predict_one
            if predict_one is not None:
                return predict_one(x)
            row = self._single_row(x)
            i = int(row.argmax())
            return [_trusted_prediction(i, self.class_names[i], row.item(i), row, self.class_names)]
        names = self.class_names
        probs = self._run(*self._to_tensor(x, invert))
        best = probs.argmax(axis=1).tolist()
        return [
            _trusted_prediction(i, names[i], row.item(i), row, names)
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

