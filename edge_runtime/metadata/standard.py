"""Read the standard TFLite Model Metadata of any `.tflite` (as TF Hub, Kaggle, MediaPipe
Model Maker, Coral and `edgeship convert` write it).

The format: a `Model.metadata` entry named `TFLITE_METADATA` whose buffer is a `ModelMetadata`
flatbuffer (schema `metadata_schema.fbs`, file identifier `M001`); the files it names (the
labels, as `TENSOR_AXIS_LABELS` of the output tensor) are packed into a zip archive appended
to the `.tflite`, which interpreters ignore.

Reading needs only `flatbuffers` and the module generated from the schema
(`edge_runtime.metadata.schema`, checked in). Nothing here raises on a bad
model: corrupt or truncated metadata, a zip whose directory lies, a labels file that cannot
be read come back as `problems` (one line each); the caller warns and runs with what is left.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.metadata.block import STANDARD_ENTRY, MetadataWarning, list_metadata

STANDARD_METADATA_NAME = STANDARD_ENTRY
METADATA_IDENTIFIER = b"M001"
MAX_LABELS_BYTES = 16 * 1024 * 1024
COLOR_SPACES = {0: "unknown", 1: "rgb", 2: "grayscale"}

# AssociatedFileType / ContentProperties / ProcessUnitOptions codes of metadata_schema.fbs
_TENSOR_AXIS_LABELS = 2
_IMAGE_PROPERTIES = 2
_NORMALIZATION_OPTIONS = 1


@dataclass(frozen=True)
class StandardMetadata:
    """What a model's standard metadata says (the parts edge_runtime uses or shows)."""

    name: str | None = None
    description: str | None = None
    version: str | None = None
    author: str | None = None
    license: str | None = None
    color_space: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels_file: str | None = None
    labels: tuple[str, ...] | None = None
    problems: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std come together")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError(f"std must not be 0. Received: std={self.std}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what `info --json` shows)."""
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "author": self.author,
            "license": self.license,
            "color_space": self.color_space,
            "normalization": None
            if self.mean is None
            else {"mean": list(self.mean), "std": list(self.std or ())},
            "labels_file": self.labels_file,
            "labels": len(self.labels) if self.labels is not None else None,
            "problems": list(self.problems),
        }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _floats(values: Any) -> tuple[float, ...] | None:
    if values is None or len(values) == 0:
        return None
    return tuple(float(v) for v in values)


def _parse(raw: bytes) -> Any:
    """The `ModelMetadataT` object of `raw`; raises on anything malformed."""
    import edge_runtime.metadata.schema as schema

    if len(raw) < 8 or raw[4:8] != METADATA_IDENTIFIER:
        raise ValueError(f"no {METADATA_IDENTIFIER.decode()} identifier")
    root = schema.ModelMetadata.GetRootAs(bytearray(raw), 0)
    return schema.ModelMetadataT.InitFromObj(root)


def _tensor(subgraph: Any, which: str) -> Any | None:
    tensors = getattr(subgraph, which) or []
    return tensors[0] if tensors else None


def _normalization(tensor: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    for unit in tensor.processUnits or []:
        if unit.optionsType == _NORMALIZATION_OPTIONS and unit.options is not None:
            mean, std = _floats(unit.options.mean), _floats(unit.options.std)
            if mean is None or std is None:
                raise ValueError("NormalizationOptions without mean or std")
            if len(mean) != len(std) and 1 not in (len(mean), len(std)):
                raise ValueError(f"{len(mean)} means for {len(std)} stds")
            if any(s == 0 for s in std):
                raise ValueError("NormalizationOptions std of 0")
            return mean, std
    return None


def _labels_name(tensor: Any) -> str | None:
    files = [f for f in tensor.associatedFiles or [] if f.type == _TENSOR_AXIS_LABELS]
    if not files:
        return None
    plain = [f for f in files if not f.locale] or files  # the default locale first
    return _text(plain[0].name)


def read_packed_file(data: bytes, name: str) -> bytes:
    """The bytes of `name` in the zip appended to a model; raises on a missing/corrupt zip."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
        if info.file_size > MAX_LABELS_BYTES:
            raise ValueError(f"{name} says it is {info.file_size} bytes")
        with archive.open(info) as member:
            content = member.read(MAX_LABELS_BYTES + 1)
        if len(content) > MAX_LABELS_BYTES:
            raise ValueError(f"{name} is over {MAX_LABELS_BYTES} bytes")
        return content


def _labels(data: bytes, name: str) -> tuple[str, ...]:
    text = read_packed_file(data, name).decode("utf-8-sig")
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise ValueError("blank lines")
    return tuple(names)


def read_standard_metadata(data: bytes, source: str = "<bytes>") -> StandardMetadata | None:
    """The standard metadata of a `.tflite` (bytes), or None if it has none. Never raises for
    bad metadata: what cannot be read is listed in `problems`."""
    try:
        raw = list_metadata(data, source).get(STANDARD_METADATA_NAME)
    except Exception:  # the model file itself is broken: loading it says so
        return None
    if raw is None:
        return None
    try:
        meta = _parse(raw)
    except Exception as err:  # the generated reader raises anything on corrupt bytes
        reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return StandardMetadata(problems=(f"its {STANDARD_METADATA_NAME} is corrupt ({reason})",))
    problems: list[str] = []
    fields: dict[str, Any] = {
        "name": _text(meta.name),
        "description": _text(meta.description),
        "version": _text(meta.version),
        "author": _text(meta.author),
        "license": _text(meta.license),
    }
    subgraph = (meta.subgraphMetadata or [None])[0]
    inp = _tensor(subgraph, "inputTensorMetadata") if subgraph else None
    out = _tensor(subgraph, "outputTensorMetadata") if subgraph else None
    if inp is not None:
        content = inp.content
        if content is not None and content.contentPropertiesType == _IMAGE_PROPERTIES:
            space = getattr(content.contentProperties, "colorSpace", 0)
            fields["color_space"] = COLOR_SPACES.get(space, "unknown")
        try:
            norm = _normalization(inp)
        except Exception as err:
            problems.append(f"its input normalization is unusable ({err})")
            norm = None
        if norm is not None:
            fields["mean"], fields["std"] = norm
    if out is not None:
        name = _labels_name(out)
        if name:
            fields["labels_file"] = name
            try:
                fields["labels"] = _labels(data, name)
            except Exception as err:  # BadZipFile, KeyError, CRC errors, UnicodeDecodeError
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                problems.append(f"its labels file {name} cannot be read ({reason})")
    return StandardMetadata(**fields, problems=tuple(problems))


def usable_labels(
    standard: StandardMetadata | None, num_classes: int, source: str
) -> tuple[str, ...] | None:
    """The packed labels if they name `num_classes` classes, else None; every problem with
    the standard metadata is one `MetadataWarning` (the model runs with what can be trusted)."""
    if standard is None:
        return None
    problems = list(standard.problems)
    packed = standard.labels
    if packed is not None and len(packed) != num_classes:
        problems.append(
            f"its labels file {standard.labels_file} has {len(packed)} names for "
            f"{num_classes} classes"
        )
        packed = None
    if problems:
        warnings.warn(
            f"The model's standard TFLite metadata is not fully usable: {'; '.join(problems)}. "
            f"Ignoring that part. Received: {source}",
            MetadataWarning,
            stacklevel=4,
        )
    return packed
