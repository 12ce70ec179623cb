"""A `.tflite` graph as data: its ops, their tensors, and the Keras layer each op came from.

Read straight from the flatbuffer with the schema module that ai-edge-litert ships (as
`edge_runtime.metadata.block` does), so no interpreter internals are needed. TFLite tensor names
carry the Keras name scopes of the traced model: `mlp_1/dense_1_2/MatMul;mlp_1/dense_1_2/BiasAdd`
is layer `dense_1` of model `mlp` (TensorFlow makes each scope unique by appending `_N`, so a
scope names a layer up to such suffixes; `layer_of_scope` resolves them in model order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Ops that only move or reshape int8 values: TFLite gives their output the scale of their input,
# so keeping a tensor in float means keeping these consumers (and theirs) in float too.
PASS_THROUGH_OPS = frozenset(
    {
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "MAX_POOL_2D",
        "TRANSPOSE",
        "STRIDED_SLICE",
        "SLICE",
        "PAD",
        "PADV2",
        "GATHER",
        "SPLIT",
        "SPLIT_V",
    }
)
# Ops that convert between float and integer, or compute shapes: never "a layer".
NON_COMPUTE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "SHAPE", "PACK", "CAST"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: its index, name, dtype, shape, and per-tensor scale and zero point."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"A tensor index is not negative. Received: index={self.index}")


@dataclass(frozen=True)
class OpInfo:
    """One operator: its position, builtin name, input and output tensor indices."""

    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError(f"An op has at least one output. Received: op={self.name}")


@dataclass(frozen=True, eq=False)
class Graph:
    """The main subgraph of a `.tflite` model."""

    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]

    def producer(self, tensor: int) -> OpInfo | None:
        """The op that writes `tensor` (None for inputs and constants)."""
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def consumers(self, tensor: int) -> list[OpInfo]:
        """The ops that read `tensor`."""
        return [op for op in self.ops if tensor in op.inputs]

    def output_name(self, op: OpInfo) -> str:
        """The op's node name: the name of its first output tensor."""
        return self.tensors[op.outputs[0]].name


_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
}


def _builtin_names(schema) -> dict[int, str]:
    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def read_graph(model_bytes: bytes) -> Graph:
    """Parse the ops and tensors of the model's first subgraph."""
    from edge_runtime.metadata.block import _schema_module

    schema = _schema_module()
    model = schema.Model.GetRootAs(bytearray(model_bytes), 0)
    names = _builtin_names(schema)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    sub = model.Subgraphs(0)
    tensors = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        q = t.Quantization()
        scale = zero_point = None
        if q is not None and q.ScaleLength() > 0:
            scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0))
        tensors.append(
            TensorInfo(
                index=i,
                name=(t.Name() or b"").decode("utf-8", "replace"),
                dtype=_TYPE_NAMES.get(t.Type(), str(t.Type())),
                shape=tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                scale=scale,
                zero_point=zero_point,
            )
        )
    ops = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        ops.append(
            OpInfo(
                index=i,
                name=names.get(codes[op.OpcodeIndex()], "CUSTOM"),
                inputs=tuple(int(k) for k in op.InputsAsNumpy() if k >= 0),
                outputs=tuple(int(k) for k in op.OutputsAsNumpy()),
            )
        )
    return Graph(ops=tuple(ops), tensors=tuple(tensors))


def _scope(tensor_name: str) -> str | None:
    """The layer scope of a tensor name: `mlp_1/dense_1_2/MatMul;...` -> `dense_1_2`."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) >= 3 else None


def layer_of_scope(scopes: Sequence[str], layer_names: Sequence[str]) -> dict[str, str]:
    """Map each scope (in graph order) to a Keras layer name: the earliest layer, in model
    order, not yet taken, whose name is the scope or the scope less `_N` suffixes."""
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    for scope in scopes:
        if scope in mapping:
            continue
        for name in layer_names:
            if name in taken:
                continue
            if scope == name or re.fullmatch(re.escape(name) + r"(_\d+)+", scope):
                mapping[scope] = name
                taken.add(name)
                break
    return mapping


def op_layers(graph: Graph, layer_names: Iterable[str]) -> dict[int, str]:
    """The Keras layer of each compute op (by op index).

    An op whose tensor name names no layer (TFLite names a model's last op after the output,
    e.g. `StatefulPartitionedCall_1:0`) belongs to the layer that produced its input.
    """
    compute = [op for op in graph.ops if op.name not in NON_COMPUTE_OPS]
    scopes = [s for op in compute if (s := _scope(graph.output_name(op)))]
    mapping = layer_of_scope(list(dict.fromkeys(scopes)), list(layer_names))
    layers: dict[int, str] = {}
    for op in compute:
        scope = _scope(graph.output_name(op))
        if scope in mapping:
            layers[op.index] = mapping[scope]
            continue
        for tensor in op.inputs:
            producer = graph.producer(tensor)
            if producer is not None and producer.index in layers:
                layers[op.index] = layers[producer.index]
                break
        else:
            layers[op.index] = scope or graph.output_name(op)
    return layers


def layer_output(graph: Graph, layers: dict[int, str], layer: str) -> int | None:
    """The tensor a layer hands on: the last output of its ops that another layer (or nobody,
    for the model's output) reads."""
    own = [op for op in graph.ops if layers.get(op.index) == layer]
    for op in reversed(own):
        for tensor in op.outputs:
            readers = graph.consumers(tensor)
            if not readers or any(layers.get(r.index) != layer for r in readers):
                return tensor
    return None


def float_closure(graph: Graph, layers: dict[int, str], layer: str) -> list[OpInfo]:
    """The ops to keep in float so that `layer`'s output stays float: its own ops, the ops
    that read its output, and through pass-through ops (reshape, max pool ...) theirs."""
    chosen = {op.index: op for op in graph.ops if layers.get(op.index) == layer}
    frontier = [t for op in list(chosen.values()) for t in op.outputs]
    while frontier:
        tensor = frontier.pop()
        for reader in graph.consumers(tensor):
            if reader.index in chosen or reader.name in ("QUANTIZE", "DEQUANTIZE"):
                continue
            chosen[reader.index] = reader
            if reader.name in PASS_THROUGH_OPS:
                frontier.extend(reader.outputs)
    return sorted(chosen.values(), key=lambda op: op.index)


def dequantize(values: np.ndarray, tensor: TensorInfo) -> np.ndarray:
    """A tensor's values in float: integer tensors through their scale and zero point."""
    if tensor.dtype in ("int8", "int16", "uint8") and tensor.scale:
        return (values.astype(np.float64) - (tensor.zero_point or 0)) * tensor.scale
    return values.astype(np.float64)
