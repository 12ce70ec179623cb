"""The per-layer report: each Keras layer's output in the quantized model against float.

For every layer, its output tensor in the quantized `.tflite` is compared (dequantized) with
the same tensor of the float32 `.tflite` on the same inputs, errors accumulated from the input
on: RMSE, RMSE / scale (a tensor rounded as well as int8 can is at 1/sqrt(12) ~ 0.29: the
error of rounding to a grid of step `scale`), the largest absolute error, and cosine
similarity. Each layer also gets its effect on the outputs (int8 and int16x8): the share of
the output error removed, and the top-1 agreement with Keras, when that layer's output alone
stays in float (`edgeship.convert.fallback.rank`). The rows come worst first: by that effect when
known, else by cosine similarity.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.convert.graph import dequantize, layer_output, op_layers, read_graph

# Samples run through both models with every tensor kept: enough for stable statistics,
# few enough that a conv net's activations (N x H x W x C floats, twice) stay small.
STATS_SAMPLES = 200
IDEAL_RMSE_OVER_SCALE = 1 / math.sqrt(12)


@dataclass(frozen=True)
class LayerStats:
    """One layer's output in the quantized model against float."""

    layer: str
    op: str
    tensor: str
    rmse: float
    max_abs_error: float
    cosine: float
    scale: float | None = None
    zero_point: int | None = None
    agreement_if_float: float | None = None
    output_error_if_float: float | None = None
    kept_float: bool = False
    levels: float | None = None
    error_removed: float | None = None  # share of the output error gone when kept float

    def __post_init__(self) -> None:
        if not self.layer:
            raise ValueError("A layer row needs the layer's name.")
        if self.rmse < 0 or self.max_abs_error < 0:
            raise ValueError(f"Errors are not negative. Received: rmse={self.rmse}")

    @property
    def rmse_over_scale(self) -> float | None:
        """RMSE in units of the quantization step (about 0.29 is ideal rounding)."""
        return self.rmse / self.scale if self.scale else None


@dataclass(frozen=True)
class LayerReport:
    """Every layer's row for one mode, worst first, and the data it was measured on."""

    mode: str
    rows: tuple[LayerStats, ...]
    samples: int
    agreement: float | None = None
    ranking_samples: int = 0
    files: tuple[Path, ...] = field(default=())

    COLUMNS = (
        "layer",
        "op",
        "rmse_over_scale",
        "rmse",
        "max_abs_error",
        "cosine",
        "scale",
        "zero_point",
        "levels",
        "error_removed_if_float",
        "agreement_if_float",
        "kept_float",
        "tensor",
    )

    def as_rows(self) -> list[dict[str, object]]:
        """The rows as dicts of `COLUMNS`."""
        out: list[dict[str, object]] = []
        for r in self.rows:
            out.append(
                {
                    "layer": r.layer,
                    "op": r.op,
                    "rmse_over_scale": _round(r.rmse_over_scale),
                    "rmse": _round(r.rmse),
                    "max_abs_error": _round(r.max_abs_error),
                    "cosine": _round(r.cosine),
                    "scale": _round(r.scale, 8),
                    "zero_point": r.zero_point,
                    "levels": _round(r.levels, 1),
                    "error_removed_if_float": _round(r.error_removed),
                    "agreement_if_float": _round(r.agreement_if_float),
                    "kept_float": r.kept_float,
                    "tensor": r.tensor,
                }
            )
        return out

    def to_csv(self) -> str:
        """The table as CSV, worst layer first."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.as_rows())
        return buf.getvalue()

    def to_markdown(self) -> str:
        """The table as Markdown with a one-paragraph key."""
        lines = [
            f"# {self.mode}: per-layer error against float",
            "",
            f"Each layer's output tensor, {self.mode} against the float32 model, on "
            f"{self.samples} verification samples (errors accumulate from the input on). "
            "RMSE / scale near 0.29 is rounding as good as the step allows; far above it, the "
            "layer's inputs are already off. Cosine near 1 keeps the tensor's direction. "
            "'error removed' is the share of the model's output error (mean squared "
            "difference of the probabilities from Keras's) that goes away when only this "
            "layer's output stays float, and 'agree if float' the top-1 agreement with Keras "
            f"then (on {self.ranking_samples} samples; all {self.mode}: {_pct(self.agreement)}): "
            "the higher, the more this layer's quantization costs. "
            "'levels' is the median, over the tensor's channels, of the distinct integer "
            "values a channel takes: a handful means one range (often an outlier channel) "
            "crushes the rest. Worst first.",
            "",
            "| layer | op | RMSE/scale | RMSE | max abs err | cosine | scale | zero point "
            "| levels | error removed | agree if float | kept float |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.layer} | {r.op} | {_num(r.rmse_over_scale, 3)} | {_num(r.rmse, 4)} | "
                f"{_num(r.max_abs_error, 4)} | {_num(r.cosine, 4)} | {_num(r.scale, 6)} | "
                f"{'-' if r.zero_point is None else r.zero_point} | {_num(r.levels, 0)} | "
                f"{_pct(r.error_removed)} | {_pct(r.agreement_if_float)} | "
                f"{'yes' if r.kept_float else ''} |"
            )
        return "\n".join(lines) + "\n"


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _all_tensors(interpreter_class, model_bytes: bytes, x: np.ndarray) -> dict[int, np.ndarray]:
    """Run `x` through the model once, keeping every tensor; {tensor index: values}."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging"
        interp = interpreter_class(
            model_content=model_bytes, experimental_preserve_all_tensors=True
        )
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], x.astype(detail["dtype"]))
    interp.invoke()
    values = {}
    for t in interp.get_tensor_details():
        try:
            values[t["index"]] = np.array(interp.get_tensor(t["index"]))
        except ValueError:  # tensors without data (e.g. optional inputs)
            continue
    return values


def _compare(q: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    """RMSE, max absolute error and mean per-sample cosine similarity of q against f."""
    diff = q - f
    rmse = float(np.sqrt(np.mean(diff**2)))
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    qf, ff = q.reshape(len(q), -1), f.reshape(len(f), -1)
    norms = np.linalg.norm(qf, axis=1) * np.linalg.norm(ff, axis=1)
    dots = np.sum(qf * ff, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
    return rmse, max_abs, float(np.mean(cos))


def layer_stats(
    quant_bytes: bytes,
    float_bytes: bytes,
    layer_names: Sequence[str],
    x: np.ndarray,
) -> list[LayerStats]:
    """Compare each layer's output tensor of the quantized model with the float model's on
    `x` (model input, float32), in graph order."""
    from edge_runtime.backends import load_backend

    interpreter_class = load_backend().interpreter_class
    x = np.asarray(x[:STATS_SAMPLES], dtype=np.float32)
    qg, fg = read_graph(quant_bytes), read_graph(float_bytes)
    q_layers, f_layers = op_layers(qg, layer_names), op_layers(fg, layer_names)
    q_values = _all_tensors(interpreter_class, quant_bytes, x)
    f_values = _all_tensors(interpreter_class, float_bytes, x)
    rows: list[LayerStats] = []
    for layer in dict.fromkeys(q_layers[op.index] for op in qg.ops if op.index in q_layers):
        qt, ft = layer_output(qg, q_layers, layer), layer_output(fg, f_layers, layer)
        if qt is None or ft is None or qt not in q_values or ft not in f_values:
            continue
        qv, fv = q_values[qt], f_values[ft]
        if qv.shape != fv.shape:
            continue
        tensor = qg.tensors[qt]
        rmse, max_abs, cos = _compare(dequantize(qv, tensor), fv.astype(np.float64))
        producer = qg.producer(qt)
        levels = None
        if np.issubdtype(qv.dtype, np.integer) and qv.ndim >= 2:
            channels = qv.reshape(-1, qv.shape[-1])
            levels = float(np.median([len(np.unique(c)) for c in channels.T]))
        rows.append(
            LayerStats(
                layer=layer,
                op="+".join(
                    dict.fromkeys(
                        op.name
                        for op in qg.ops
                        if q_layers.get(op.index) == layer
                        and qg.tensors[op.outputs[0]].dtype != "int32"  # shape arithmetic
                    )
                )
                or (producer.name if producer else "-"),
                tensor=tensor.name,
                rmse=rmse,
                max_abs_error=max_abs,
                cosine=cos,
                scale=tensor.scale if tensor.dtype in ("int8", "int16") else None,
                zero_point=tensor.zero_point if tensor.dtype in ("int8", "int16") else None,
                levels=levels,
            )
        )
    return rows


def worst_first(rows: Sequence[LayerStats]) -> list[LayerStats]:
    """Rows ordered by cost: lowest output error when kept float first (the layer whose int8
    costs the outputs most), then, for rows without it, lowest cosine similarity."""

    def key(r: LayerStats) -> tuple:
        if r.output_error_if_float is not None:
            return (0, r.output_error_if_float, -(r.agreement_if_float or 0.0), r.cosine)
        return (1, r.cosine, -(r.rmse_over_scale or 0.0))

    return sorted(rows, key=key)


def plot_layers(report: LayerReport, path: Path) -> None:
    """Bars per layer (worst at the top): RMSE/scale against the 0.29 line, and the share
    of the output error that goes away when the layer stays float."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report.rows)[::-1]
    names = [r.layer for r in rows]
    with_rank = any(r.error_removed is not None for r in rows)
    fig, axes = plt.subplots(
        1, 2 if with_rank else 1, figsize=(10 if with_rank else 6, 1.2 + 0.4 * len(rows))
    )
    axes = np.atleast_1d(axes)
    ratio = [r.rmse_over_scale or 0.0 for r in rows]
    axes[0].barh(names, ratio, color="tab:orange")
    axes[0].axvline(IDEAL_RMSE_OVER_SCALE, color="gray", linestyle="--", label="0.29: ideal")
    axes[0].set_xlabel("RMSE / scale")
    axes[0].legend(loc="lower right", fontsize=8)
    if with_rank:
        removed = [r.error_removed or 0.0 for r in rows]
        axes[1].barh(names, removed, color="tab:blue")
        axes[1].set_xlabel("share of the output error removed if kept float")
        axes[1].set_xlim(min(0.0, *removed), 1)
        axes[1].set_yticklabels([])
    fig.suptitle(f"{report.mode}: per-layer error, worst at the top")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
