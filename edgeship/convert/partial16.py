"""int16x8 with chosen ops kept in float, by editing the plain int16x8 flatbuffer.

TensorFlow has no int16x8 path that keeps ops in float: plain int16x8 goes through the old
calibrate-and-quantize quantizer, whose Python binding takes no op list, and the MLIR
quantizer behind `QuantizationDebugger`/`mlir_quantize(denylisted_nodes=...)` accepts
`inference_type=QUANTIZED_INT16` but (TF 2.21) writes int16 activations with non-zero zero
points, which LiteRT's int16 kernels refuse ("output->params.zero_point != 0" in
FULLY_CONNECTED).

So the partly-float model is built from two files the converter writes anyway, both out of
the same converted graph: the plain int16x8 model and the calibrated float model (the graph
the quantizer starts from, same op order and tensor names). Each chosen op of the int16x8
model is replaced by its float twin (float weights, the float op's options); an int16 input
is read through a DEQUANTIZE, and an output that an int16 op (or the model's output) still
reads is written back through a QUANTIZE with the tensor's own calibrated scale, so nothing
else in the model changes. With nothing chosen, the plain int16x8 bytes come back untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from edgeship.convert.converter import ModeConversionError, _reason, make_converter, to_tflite
from edgeship.convert.graph import Graph, _builtin_names, read_graph
from edgeship.train.quiet import captured_stderr

_FLOAT32 = 0
_QUANTIZED = frozenset({7, 9, 3})  # int16, int8, uint8
_CONVERT_OPS = ("QUANTIZE", "DEQUANTIZE")


def _op_name(model, op, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def _unpack(schema, model_bytes: bytes):
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(model_bytes), 0))


def _pack(schema, model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode(model, code) -> int:
    """The index of `code` (builtin code and version) in `model`, added if missing."""
    for i, have in enumerate(model.operatorCodes):
        if (
            have.builtinCode == code.builtinCode
            and have.deprecatedBuiltinCode == code.deprecatedBuiltinCode
            and have.version == code.version
            and have.customCode == code.customCode
        ):
            return i
    model.operatorCodes.append(copy.deepcopy(code))
    return len(model.operatorCodes) - 1


def _builtin_opcode(schema, model, name: str) -> int:
    code = schema.OperatorCodeT()
    value = getattr(schema.BuiltinOperator, name)
    code.builtinCode = value
    code.deprecatedBuiltinCode = min(value, 127)
    code.version = 1
    for i, have in enumerate(model.operatorCodes):
        if max(have.builtinCode, have.deprecatedBuiltinCode) == value:
            return i
    return _opcode(model, code)


def _drop_unused(model) -> None:
    """Remove the tensors no op or signature uses any more (the int16x8 weights of the ops
    now in float), then the buffers no tensor or metadata entry uses; renumber the rest."""
    sub = model.subgraphs[0]
    used: set[int] = {int(t) for t in sub.inputs} | {int(t) for t in sub.outputs}
    for op in sub.operators:
        for field in (op.inputs, op.outputs, op.intermediates):
            used.update(int(t) for t in (field if field is not None else ()) if t >= 0)
    keep = sorted(used)
    new_index = {old: new for new, old in enumerate(keep)}

    def remap(values):
        if values is None:
            return None
        return np.array([new_index[int(t)] if t >= 0 else -1 for t in values], dtype=np.int32)

    sub.tensors = [sub.tensors[i] for i in keep]
    sub.inputs, sub.outputs = remap(sub.inputs), remap(sub.outputs)
    for op in sub.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        op.intermediates = remap(op.intermediates)
    for sig in model.signatureDefs or ():
        for entry in (sig.inputs or []) + (sig.outputs or []):
            entry.tensorIndex = new_index[int(entry.tensorIndex)]

    buffers_used = {0} | {int(t.buffer) for s in model.subgraphs for t in s.tensors}
    buffers_used |= {int(m.buffer) for m in model.metadata or ()}
    buffers_used |= {
        int(b) for b in (model.metadataBuffer if model.metadataBuffer is not None else ())
    }
    order = sorted(buffers_used)
    new_buffer = {old: new for new, old in enumerate(order)}
    model.buffers = [model.buffers[i] for i in order]
    for s in model.subgraphs:
        for t in s.tensors:
            t.buffer = new_buffer[int(t.buffer)]
    for m in model.metadata or ():
        m.buffer = new_buffer[int(m.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [new_buffer[int(b)] for b in model.metadataBuffer]


class PartialInt16x8:
    """The plain int16x8 model, and any set of its ops (named by output tensor) in float."""

    def __init__(self, plain: bytes, calibrated: bytes) -> None:
        from edge_runtime.metadata.block import _schema_module

        self._schema = schema = _schema_module()
        self.plain, self.calibrated = bytes(plain), bytes(calibrated)
        self._q = _unpack(schema, plain)
        self._f = _unpack(schema, calibrated)
        names = _builtin_names(schema)
        qsub, fsub = self._q.subgraphs[0], self._f.subgraphs[0]
        q_ops = [op for op in qsub.operators if _op_name(self._q, op, names) not in _CONVERT_OPS]
        f_ops = [op for op in fsub.operators if _op_name(self._f, op, names) not in _CONVERT_OPS]
        q_kinds = [_op_name(self._q, op, names) for op in q_ops]
        f_kinds = [_op_name(self._f, op, names) for op in f_ops]
        if q_kinds != f_kinds:
            raise ModeConversionError(
                "int16x8 --fallback: the int16x8 model's ops do not line up with the float "
                f"graph's. Received: int16x8 {q_kinds[:8]}, float {f_kinds[:8]}"
            )
        # id() of each int16x8 op -> its float twin
        self._twin = {id(q): f for q, f in zip(q_ops, f_ops, strict=True)}
        self.graph: Graph = read_graph(self.plain)

    @classmethod
    def convert(
        cls, export_dir: str, calibration: np.ndarray, plain: bytes | None = None
    ) -> PartialInt16x8:
        """Convert an exported SavedModel: the plain int16x8 model (unless given) and the
        calibrated float graph it was quantized from."""
        import warnings

        samples = np.asarray(calibration, dtype=np.float32)
        if plain is None:
            plain = to_tflite(export_dir, "int16x8", samples)
        converter = make_converter(export_dir, "int16x8", samples)
        converter._experimental_calibrate_only = True  # the float graph, with its ranges
        log: list[str] = []
        try:
            with warnings.catch_warnings(), captured_stderr() as log:
                warnings.simplefilter("ignore")
                calibrated = bytes(converter.convert())
        except Exception as err:  # the converter raises anything
            raise ModeConversionError(_reason(err, log)) from None
        return cls(plain, calibrated)

    def node_names(self) -> list[str]:
        """Every op's node name (its first output tensor's name), in graph order."""
        sub = self._q.subgraphs[0]
        return [sub.tensors[op.outputs[0]].name.decode() for op in sub.operators]

    def quantize(self, float_nodes: Iterable[str] = ()) -> bytes:
        """The int16x8 model with the ops whose first output is named in `float_nodes` in
        float (the plain bytes when there are none)."""
        wanted = {n.encode() if isinstance(n, str) else n for n in float_nodes}
        if not wanted:
            return self.plain
        schema = self._schema
        m = copy.deepcopy(self._q)
        sub = m.subgraphs[0]
        fsub = self._f.subgraphs[0]
        originals = self._q.subgraphs[0].operators
        chosen = {
            i
            for i, op in enumerate(originals)
            if sub.tensors[op.outputs[0]].name in wanted and id(op) in self._twin
        }
        if not chosen:
            return self.plain
        readers: dict[int, list[int]] = {}
        for i, op in enumerate(sub.operators):
            for t in op.inputs if op.inputs is not None else ():
                readers.setdefault(int(t), []).append(i)
        graph_outputs = {int(t) for t in sub.outputs}

        def new_tensor(like, name: bytes, dtype: int, buffer: int | None = None) -> int:
            t = schema.TensorT()
            t.shape = copy.deepcopy(like.shape)
            t.shapeSignature = copy.deepcopy(like.shapeSignature)
            t.type = dtype
            t.name = name
            if buffer is None:
                m.buffers.append(schema.BufferT())
                buffer = len(m.buffers) - 1
            t.buffer = buffer
            sub.tensors.append(t)
            return len(sub.tensors) - 1

        def simple_op(name: str, src: int, dst: int):
            op = schema.OperatorT()
            op.opcodeIndex = _builtin_opcode(schema, m, name)
            op.inputs = np.array([src], dtype=np.int32)
            op.outputs = np.array([dst], dtype=np.int32)
            return op

        float_of: dict[int, int] = {}  # int16x8 tensor -> its float stand-in
        ops_out = []
        for i, op in enumerate(sub.operators):
            if i not in chosen:
                ops_out.append(op)
                continue
            twin = self._twin[id(originals[i])]
            inputs = []
            for slot, f_index in enumerate(twin.inputs):
                f_index = int(f_index)
                if f_index < 0:
                    inputs.append(-1)
                    continue
                ft = fsub.tensors[f_index]
                f_buffer = self._f.buffers[ft.buffer]
                if f_buffer.data is not None and len(f_buffer.data):  # a weight: copy it
                    m.buffers.append(copy.deepcopy(f_buffer))
                    index = new_tensor(ft, ft.name + b"/float", ft.type, len(m.buffers) - 1)
                    inputs.append(index)
                    continue
                q_index = int(op.inputs[slot])
                qt = sub.tensors[q_index]
                if q_index in float_of:
                    inputs.append(float_of[q_index])
                elif qt.type in _QUANTIZED and qt.quantization is not None:
                    index = new_tensor(qt, qt.name + b"/dequantized", _FLOAT32)
                    ops_out.append(simple_op("DEQUANTIZE", q_index, index))
                    float_of[q_index] = index
                    inputs.append(index)
                else:
                    inputs.append(q_index)
            outputs = []
            for q_index in op.outputs:
                q_index = int(q_index)
                qt = sub.tensors[q_index]
                if qt.type in _QUANTIZED:
                    index = new_tensor(qt, qt.name + b"/float", _FLOAT32)
                    float_of[q_index] = index
                    outputs.append(index)
                else:
                    outputs.append(q_index)
            new = copy.deepcopy(twin)
            new.opcodeIndex = _opcode(m, self._f.operatorCodes[twin.opcodeIndex])
            new.inputs = np.array(inputs, dtype=np.int32)
            new.outputs = np.array(outputs, dtype=np.int32)
            new.intermediates = None
            ops_out.append(new)
            for q_index, index in zip((int(t) for t in op.outputs), outputs, strict=True):
                if index == q_index:
                    continue
                still_read = q_index in graph_outputs or any(
                    r not in chosen for r in readers.get(q_index, ())
                )
                if still_read:
                    ops_out.append(simple_op("QUANTIZE", index, q_index))
        sub.operators = ops_out
        _drop_unused(m)
        try:
            return _pack(schema, m)
        except Exception as err:  # flatbuffers raises anything
            raise ModeConversionError(
                f"int16x8 --fallback could not write the model ({type(err).__name__}: {err})"
            ) from None
