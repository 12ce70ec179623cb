"""The `edgeship` metadata entry of a .tflite flatbuffer: read it, write it, find a sidecar.

The TFLite schema stores `Model.metadata: [Metadata {name: string, buffer: uint}]`, where
`buffer` indexes `Model.buffers` and each `Buffer.data: [ubyte]` holds the bytes; the file
identifier `TFL3` sits at bytes 4-8.

Reading is a tiny hand-written flatbuffer walk over `struct` (a dozen lines of table access),
not the generated schema module, on purpose:
- it must work on a device that has only `tflite_runtime`, which ships no schema module
  (`ai_edge_litert.schema_py_generated` exists only with ai-edge-litert, and TensorFlow's copy
  would drag TensorFlow in);
- it touches four fields (`Model.buffers`, `Model.metadata`, `Metadata.name/buffer`,
  `Buffer.data/offset/size`), whose slots are frozen by the schema's compatibility rules;
- every offset is bounds-checked, so a truncated or corrupt file is a `ModelFileError`, never
  an IndexError or a segfault; and it does not unpack the whole model (fast on big files).

Writing needs the object API (unpack, append a buffer, repack), so it uses the generated
schema module shipped by ai-edge-litert; that only happens on the desktop (convert).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from edge_runtime.errors import BackendError, ModelFileError

METADATA_NAME = "edgeship"
FILE_IDENTIFIER = b"TFL3"
CONVERSION_METADATA = "CONVERSION_METADATA"


class MetadataWarning(UserWarning):
    """Metadata that could not be used in full (standard metadata, or edgeship's block that
    cannot be parsed): the model runs without that part."""


# Field slots (declaration order in schema.fbs) of the tables we read.
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


class _Reader:
    """Bounds-checked access to flatbuffer tables, vectors and strings in `data`."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.source = source

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > len(self.data):
            raise ModelFileError(
                "The model file is truncated or corrupt: a flatbuffer offset points outside "
                f"the file ({pos}+{size} > {len(self.data)} bytes). Re-export or re-copy the "
                f"model. Received: {self.source}"
            )

    def u16(self, pos: int) -> int:
        self._need(pos, 2)
        value: int = struct.unpack_from("<H", self.data, pos)[0]
        return value

    def u32(self, pos: int) -> int:
        self._need(pos, 4)
        value: int = struct.unpack_from("<I", self.data, pos)[0]
        return value

    def i32(self, pos: int) -> int:
        self._need(pos, 4)
        value: int = struct.unpack_from("<i", self.data, pos)[0]
        return value

    def u64(self, pos: int) -> int:
        self._need(pos, 8)
        value: int = struct.unpack_from("<Q", self.data, pos)[0]
        return value

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of field `slot` of the table at `table`, or None if absent."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vt_size:
            return None
        rel = self.u16(vtable + entry)
        return table + rel if rel else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, slot: int) -> tuple[int, int]:
        """(start of elements, length) of a vector field; (0, 0) if absent."""
        pos = self.field(table, slot)
        if pos is None:
            return 0, 0
        vec = self.indirect(pos)
        n = self.u32(vec)
        return vec + 4, n

    def table_at(self, elements: int, i: int) -> int:
        return self.indirect(elements + 4 * i)

    def bytes_field(self, table: int, slot: int) -> bytes | None:
        start, n = self.vector(table, slot)
        if not start:
            return None
        self._need(start, n)
        return self.data[start : start + n]


def check_tflite(data: bytes, source: str = "<bytes>") -> None:
    """Raise ModelFileError unless `data` looks like a TFLite flatbuffer (size, `TFL3`)."""
    if len(data) == 0:
        raise ModelFileError(
            f"The model file is empty (0 bytes). Re-export or re-copy it. Received: {source}"
        )
    if len(data) < 8:
        raise ModelFileError(
            f"The model file is truncated ({len(data)} bytes, a .tflite has at least 8). "
            f"Re-export or re-copy it. Received: {source}"
        )
    if data[4:8] != FILE_IDENTIFIER:
        what = ""
        if data[:4] == b"PK\x03\x04":
            what = " (it is a zip archive: a Keras .keras model? convert it first)"
        elif data[:8] == b"\x89HDF\r\n\x1a\n":
            what = " (it is an HDF5 file: a Keras .h5 model? convert it first)"
        raise ModelFileError(
            "The file is not a TensorFlow Lite model: its flatbuffer identifier is "
            f"{bytes(data[4:8])!r}, expected {FILE_IDENTIFIER!r}{what}. Pass a .tflite file "
            f"(edgeship convert MODEL --out RUN writes them). Received: {source}"
        )
    root = struct.unpack_from("<I", data, 0)[0]
    if root + 4 > len(data):
        raise ModelFileError(
            "The model file is truncated or corrupt: its root table lies outside the file. "
            f"Re-export or re-copy it. Received: {source}"
        )


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a .tflite file, raising ModelFileError if it is missing, unreadable or not TFLite."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"Model file not found. Check the path. Received: path={p}")
    if p.is_dir():
        raise ModelFileError(
            f"Expected a .tflite file, got a directory. Pass the model file. Received: path={p}"
        )
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ModelFileError(f"Cannot read the model file ({err}). Received: path={p}") from None
    check_tflite(data, f"path={p}")
    return data


def list_metadata(data: bytes, source: str = "<bytes>") -> dict[str, bytes]:
    """All metadata entries of a .tflite flatbuffer as {name: raw bytes}."""
    check_tflite(data, source)
    r = _Reader(data, source)
    model = r.indirect(0)
    buffers, n_buffers = r.vector(model, _MODEL_BUFFERS)
    metas, n_metas = r.vector(model, _MODEL_METADATA)
    out: dict[str, bytes] = {}
    for i in range(n_metas):
        meta = r.table_at(metas, i)
        raw_name = r.bytes_field(meta, _METADATA_NAME)
        name = raw_name.decode("utf-8", "replace") if raw_name is not None else ""
        pos = r.field(meta, _METADATA_BUFFER)
        index = r.u32(pos) if pos is not None else 0
        if index >= n_buffers:
            raise ModelFileError(
                f"The model's metadata entry {name!r} points at buffer {index}, but the model "
                f"has {n_buffers} buffers: the file is corrupt. Received: {source}"
            )
        buf = r.table_at(buffers, index)
        payload = r.bytes_field(buf, _BUFFER_DATA)
        if payload is None:
            # Models over 2 GB keep buffers outside the flatbuffer: (offset, size) in the file.
            off_pos, size_pos = r.field(buf, _BUFFER_OFFSET), r.field(buf, _BUFFER_SIZE)
            offset = r.u64(off_pos) if off_pos is not None else 0
            size = r.u64(size_pos) if size_pos is not None else 0
            if offset > 1 and size:
                r._need(offset, size)
                payload = data[offset : offset + size]
            else:
                payload = b""
        out[name] = bytes(payload)
    return out


def _parse_json(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as err:
        raise ModelFileError(
            f"The {what} is not valid JSON ({err}). Re-run edgeship convert. Received: {what}"
        ) from None
    except RecursionError:
        raise ModelFileError(
            f"The {what} is JSON nested too deeply to read. Re-run edgeship convert. "
            f"Received: {what}"
        ) from None
    if not isinstance(value, dict):
        raise ModelFileError(
            f"The {what} must be a JSON object, got {type(value).__name__}. Received: {what}"
        )
    return value


def read_embedded_metadata(
    data: bytes, source: str = "<bytes>", *, lenient: bool = False
) -> dict[str, Any] | None:
    """The `edgeship` metadata dict embedded in `data`, or None if the model has none.

    `lenient`: a block that cannot be parsed (bad JSON, nested too deeply, anything) is one
    `MetadataWarning` and None, so the model still runs on what its tensors say."""
    entries = list_metadata(data, source)
    raw = entries.get(METADATA_NAME)
    if raw is None:
        return None
    what = f"'{METADATA_NAME}' metadata of {source}"
    try:
        return _parse_json(raw.rstrip(b"\x00"), what)
    except Exception as err:  # noqa: BLE001 - any parse failure: the model still runs
        if not lenient:
            raise
        import warnings

        reason = (
            str(err)
            if isinstance(err, ModelFileError)
            else (f"The {what} cannot be read ({type(err).__name__}). Received: {what}")
        )
        warnings.warn(f"{reason.split('. Re-run')[0]}; ignoring it.", MetadataWarning, stacklevel=1)
        return None


def sidecar_paths(model_path: str | os.PathLike[str]) -> list[Path]:
    """Where a sidecar JSON for `model_path` may live: `<stem>.json`, then `<name>.json`."""
    p = Path(model_path)
    return [p.with_suffix(".json"), p.with_name(p.name + ".json")]


def read_sidecar(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata dict of the first existing sidecar JSON of `model_path`, or None."""
    for candidate in sidecar_paths(model_path):
        if candidate.is_file():
            return _parse_json(candidate.read_bytes(), f"sidecar {candidate}")
    return None


def read_metadata(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    sidecar: bool = True,
    lenient: bool = False,
) -> dict[str, Any] | None:
    """The `edgeship` metadata of a model (path or bytes); a path falls back to a sidecar JSON.
    `lenient`: an unreadable embedded block is a warning (see read_embedded_metadata)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return read_embedded_metadata(bytes(source), lenient=lenient)
    data = read_model_bytes(source)
    meta = read_embedded_metadata(data, f"path={source}", lenient=lenient)
    if meta is None and sidecar:
        meta = read_sidecar(source)
    return meta


def _schema_module() -> ModuleType:
    """The generated TFLite schema module (object API), from ai-edge-litert."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise BackendError(
            "Writing metadata into a .tflite needs the TFLite schema module shipped by "
            "ai-edge-litert. Install it: pip install 'edgeship[edge]'. "
            "Received: no module ai_edge_litert.schema_py_generated"
        ) from None
    return cast(ModuleType, schema_py_generated)  # ai-edge-litert ships no type hints


# The standard TFLite Model Metadata's entry: its associated files are zipped after the model.
STANDARD_ENTRY = "TFLITE_METADATA"


def packed_files(model_bytes: bytes) -> dict[str, bytes]:
    """The associated files zipped after a model that has standard metadata ({} if none can
    be read: a model without that entry, no zip, or a damaged one)."""
    if STANDARD_ENTRY not in list_metadata(model_bytes):
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError):
        return {}


def pack_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """`model_bytes` with a zip of `files` appended (stored; offsets from the file's start)."""
    buffer = io.BytesIO(model_bytes)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


def inline_buffer_data(model: Any, model_bytes: bytes) -> None:
    """Take into `model` (the object API's `ModelT` of `model_bytes`) the bytes of each buffer
    stored after the flatbuffer (`offset`/`size` from the file's start, as ai-edge-quantizer
    and litert-torch write larger models): a rewritten flatbuffer would lose them."""
    import numpy as np

    for buf in model.buffers or []:
        if (getattr(buf, "offset", 0) or 0) > 1:
            buf.data = np.frombuffer(model_bytes, np.uint8, count=buf.size, offset=buf.offset)
            buf.offset, buf.size = 0, 0


def embed_metadata(
    model_bytes: bytes,
    metadata: dict[str, Any] | bytes,
    name: str = METADATA_NAME,
    keep_packed: bool = True,
) -> bytes:
    """Return `model_bytes` with `metadata` (a dict as JSON, or raw bytes) stored under `name`,
    replacing any old entry.

    Other entries (e.g. the converter's `CONVERSION_METADATA`) are kept, and so are the
    associated files zipped after the flatbuffer (the standard metadata's labels), packed
    again after the rewritten model unless `keep_packed` is False.
    """
    files = packed_files(model_bytes) if keep_packed else {}
    import flatbuffers

    if isinstance(metadata, bytes):
        payload = metadata
    elif isinstance(metadata, dict):
        payload = json.dumps(metadata, allow_nan=False).encode("utf-8")
    else:
        raise TypeError(f"metadata must be a dict or bytes, got {type(metadata).__name__}")
    check_tflite(model_bytes)
    schema = _schema_module()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(model_bytes), 0))
    except Exception as err:  # the generated code raises anything on corrupt input
        raise ModelFileError(
            f"Cannot parse the model flatbuffer ({type(err).__name__}: {err}). "
            "Re-export the model. Received: <bytes>"
        ) from None
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []

    import numpy as np

    inline_buffer_data(model, model_bytes)
    data = np.frombuffer(payload, dtype=np.uint8)
    for entry in model.metadata:
        entry_name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if entry_name == name:
            model.buffers[entry.buffer].data = data
            model.buffers[entry.buffer].offset = 0
            model.buffers[entry.buffer].size = 0
            break
    else:
        buffer = schema.BufferT()
        buffer.data = data
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)

    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    rewritten = bytes(builder.Output())
    return pack_files(rewritten, files) if files else rewritten


# What identifies one trained model: a .tflite converted from another model.keras differs here.
SOURCE_KEYS = ("model", "training", "metrics", "class_names", "input")


def same_source(run_meta: dict[str, Any], tflite_meta: dict[str, Any]) -> bool:
    """Whether `tflite_meta` (a .tflite's edgeship entry) describes the model of `run_meta`."""

    def identity(meta: dict[str, Any]) -> tuple[Any, ...]:
        dataset = meta.get("dataset") or {}
        return tuple(meta.get(k) for k in SOURCE_KEYS) + (dataset.get("sha256"),)

    return identity(run_meta) == identity(tflite_meta)
