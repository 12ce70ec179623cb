"""A stock-style model's standard metadata, built independently of edgeship's writer.

The `ModelMetadata` comes from the schema module shipped in mediapipe's wheel, the labels are
zipped onto the file with `zipfile` (as tflite-support's MetadataPopulator does).
"""

from __future__ import annotations

import io
import zipfile

import pytest

from edge_runtime.metadata.block import embed_metadata

NAMES = [f"thing {i}" for i in range(10)]


def mp_schema():
    """mediapipe's own generated schema module (not edgeship's)."""
    return pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")


def hand_packed(model: bytes, names: list[str], mean=None, std=None, labels_name="names.txt"):
    """`model` with TFLITE_METADATA naming `labels_name` as the output's TENSOR_AXIS_LABELS (and
    NormalizationOptions `mean`/`std` when given), and that file zipped onto it."""
    import flatbuffers

    s = mp_schema()
    labels = s.AssociatedFileT()
    labels.name, labels.type = labels_name, s.AssociatedFileType.TENSOR_AXIS_LABELS
    out = s.TensorMetadataT()
    out.name, out.associatedFiles = "probability", [labels]
    inp = s.TensorMetadataT()
    inp.name = "image"
    if mean is not None:
        norm = s.NormalizationOptionsT()
        norm.mean, norm.std = list(mean), list(std)
        unit = s.ProcessUnitT()
        unit.optionsType, unit.options = s.ProcessUnitOptions.NormalizationOptions, norm
        inp.processUnits = [unit]
    sub = s.SubGraphMetadataT()
    sub.inputTensorMetadata, sub.outputTensorMetadata = [inp], [out]
    meta = s.ModelMetadataT()
    meta.name, meta.subgraphMetadata, meta.minParserVersion = "stock", [sub], "1.0.0"
    b = flatbuffers.Builder(0)
    b.Finish(meta.Pack(b), b"M001")
    data = embed_metadata(model, bytes(b.Output()), name="TFLITE_METADATA")
    buf = io.BytesIO(data)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr(labels_name, "\n".join(names) + "\n")
    return buf.getvalue()
