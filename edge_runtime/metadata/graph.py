"""What a .tflite graph says about its output: does the model itself end in a softmax?

`output_head(data, tensor)` walks back from an output tensor through the ops that only move or
re-type values (QUANTIZE, DEQUANTIZE, RESHAPE, SQUEEZE, CAST) to the op that computed it, and
names that op. A classifier whose head is SOFTMAX or LOGISTIC outputs probabilities; anything
else outputs scores (logits) that still need a softmax.

It reads the flatbuffer with the same bounds-checked walk as `edge_runtime.metadata.block` (no
generated schema module: the device may have only `tflite_runtime`). Slots from schema.fbs:
Model.operator_codes = 1, Model.subgraphs = 2; SubGraph.operators = 3;
Operator.opcode_index = 0, Operator.outputs = 2, Operator.inputs = 1;
OperatorCode.deprecated_builtin_code = 0 (byte), OperatorCode.builtin_code = 3 (int32).
"""

from __future__ import annotations

import struct

from edge_runtime.metadata.block import _Reader, check_tflite

# BuiltinOperator values (schema.fbs; frozen by the schema's compatibility rules).
BUILTIN_NAMES = {
    6: "DEQUANTIZE",
    14: "LOGISTIC",
    22: "RESHAPE",
    25: "SOFTMAX",
    43: "SQUEEZE",
    53: "CAST",
    114: "QUANTIZE",
}
PROBABILITY_HEADS = frozenset({"SOFTMAX", "LOGISTIC"})
_PASS_THROUGH = frozenset({"DEQUANTIZE", "QUANTIZE", "RESHAPE", "SQUEEZE", "CAST"})

_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS = 1, 2
_SUBGRAPH_OPERATORS = 3
_OPERATOR_OPCODE, _OPERATOR_INPUTS, _OPERATOR_OUTPUTS = 0, 1, 2
_OPCODE_DEPRECATED, _OPCODE_BUILTIN = 0, 3


def _int_vector(r: _Reader, table: int, slot: int) -> list[int]:
    start, n = r.vector(table, slot)
    if not start:
        return []
    r._need(start, 4 * n)
    return list(struct.unpack_from(f"<{n}i", r.data, start))


def _op_name(r: _Reader, codes: int, n_codes: int, index: int) -> str:
    if index >= n_codes:
        return "?"
    code = r.table_at(codes, index)
    pos = r.field(code, _OPCODE_DEPRECATED)
    deprecated = struct.unpack_from("<b", r.data, pos)[0] if pos is not None else 0
    pos = r.field(code, _OPCODE_BUILTIN)
    builtin = r.i32(pos) if pos is not None else 0
    value = max(deprecated, builtin)  # newer files fill builtin_code, older ones the byte
    return BUILTIN_NAMES.get(value, f"builtin {value}")


def output_head(data: bytes, tensor: int, source: str = "<bytes>") -> str | None:
    """The name of the op that computes output `tensor` of subgraph 0 (past re-typing ops).

    None when no op writes the tensor (e.g. an input passed straight through).
    """
    check_tflite(data, source)
    r = _Reader(data, source)
    model = r.indirect(0)
    codes, n_codes = r.vector(model, _MODEL_OPERATOR_CODES)
    subgraphs, n_subgraphs = r.vector(model, _MODEL_SUBGRAPHS)
    if not n_subgraphs:
        return None
    ops, n_ops = r.vector(r.table_at(subgraphs, 0), _SUBGRAPH_OPERATORS)
    producer: dict[int, tuple[str, list[int]]] = {}
    for i in range(n_ops):
        op = r.table_at(ops, i)
        pos = r.field(op, _OPERATOR_OPCODE)
        name = _op_name(r, codes, n_codes, r.u32(pos) if pos is not None else 0)
        inputs = _int_vector(r, op, _OPERATOR_INPUTS)
        for out in _int_vector(r, op, _OPERATOR_OUTPUTS):
            producer[out] = (name, inputs)
    seen: set[int] = set()
    while tensor in producer and tensor not in seen:
        seen.add(tensor)
        name, inputs = producer[tensor]
        if name not in _PASS_THROUGH or not inputs:
            return name
        tensor = inputs[0]
    return None


# TensorType (schema.fbs) -> bytes per element; unknown types count 8 (never undercounted).
_TYPE_BYTES = {
    0: 4,
    1: 2,
    2: 4,
    3: 1,
    4: 8,
    6: 1,
    7: 2,
    8: 8,
    9: 1,
    10: 8,
    11: 16,
    12: 8,
    13: 4,
    15: 4,
    16: 8,
    17: 1,
}
_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
}
_SUBGRAPH_TENSORS, _SUBGRAPH_INPUTS = 0, 1
_TENSOR_SHAPE, _TENSOR_TYPE = 0, 1


def input_tensors(data: bytes, source: str = "<bytes>") -> list[tuple[list[int], str, int]]:
    """(shape, type name, bytes) of each input of subgraph 0, read from the flatbuffer itself:
    before any interpreter exists, so a huge declared input costs nothing to look at."""
    check_tflite(data, source)
    r = _Reader(data, source)
    model = r.indirect(0)
    subgraphs, n_subgraphs = r.vector(model, _MODEL_SUBGRAPHS)
    if not n_subgraphs:
        return []
    subgraph = r.table_at(subgraphs, 0)
    tensors, n_tensors = r.vector(subgraph, _SUBGRAPH_TENSORS)
    out = []
    for index in _int_vector(r, subgraph, _SUBGRAPH_INPUTS):
        if not 0 <= index < n_tensors:
            continue
        tensor = r.table_at(tensors, index)
        shape = _int_vector(r, tensor, _TENSOR_SHAPE)
        pos = r.field(tensor, _TENSOR_TYPE)
        kind = struct.unpack_from("<b", r.data, pos)[0] if pos is not None else 0
        count = 1
        for dim in shape:
            count *= max(dim, 1)
        out.append((shape, _TYPE_NAMES.get(kind, f"type {kind}"), count * _TYPE_BYTES.get(kind, 8)))
    return out


def is_softmax_quantization(dtype_name: str, scale: float, zero_point: int) -> bool:
    """True for TFLite's fixed softmax output quantization: scale 1/256, zero point 0 (uint8)
    or -128 (int8), so the 256 codes cover [0, 1)."""
    return abs(scale * 256.0 - 1.0) < 1e-6 and (dtype_name, zero_point) in (
        ("uint8", 0),
        ("int8", -128),
    )
