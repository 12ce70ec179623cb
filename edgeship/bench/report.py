"""Report writers: `report.json`, `report.csv`, `report.md`, the plots, and the Rich table."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.files import atomic_write_text, make_output_dir
from edgeship.bench.device import device_p50_text

CSV_FIELDS = (
    "name",
    "format",
    "quantization",
    "size_bytes",
    "accuracy",
    "agreement",
    "prob_diff_mean",
    "prob_diff_max",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "latency_mean_us",
    "latency_min_us",
    "latency_max_us",
    "latency_method",
    "throughput_ips",
    "load_ms",
    "peak_rss_mb",
    "baseline_rss_mb",
    "model_rss_mb",
    "device_latency_p50_us",
    "device_latency_p99_us",
    "device_throughput_ips",
    "device_peak_rss_mb",
    "photo_p50_us",
)


# Past this many classes `confusion_matrix` is written sparse, as `confusion_sparse`: a dense
# 1001 x 1001 matrix made report.json 13 MB per model, almost all zeros.
MAX_DENSE_CONFUSION = 100


def _sparse_confusion(m: dict[str, Any]) -> dict[str, Any]:
    cm = m.get("confusion_matrix")
    if cm is None or len(cm) <= MAX_DENSE_CONFUSION:
        return m
    a = np.asarray(cm)
    rows, cols = np.nonzero(a)
    return {
        **m,
        "confusion_matrix": None,
        "confusion_sparse": {
            "classes": len(a),
            "cells": [[int(i), int(j), int(a[i, j])] for i, j in zip(rows, cols, strict=True)],
        },
    }


def clean(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe report: private keys (`_probs`) and raw latency samples dropped; a
    many-class confusion matrix as its non-zero cells `[true, predicted, count]`."""
    out = {k: v for k, v in report.items() if not k.startswith("_")}
    out["models"] = [
        _sparse_confusion(
            {k: v for k, v in m.items() if not k.startswith("_") and k != "latency_samples_us"}
        )
        for m in report["models"]
    ]
    return json.loads(json.dumps(out, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _fmt(value: Any, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def csv_text(report: dict[str, Any]) -> str:
    """One row per model, flat columns (`CSV_FIELDS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in report["models"]:
        row = {k: m.get(k) for k in CSV_FIELDS}
        for k in ("p50", "p90", "p99", "mean", "min", "max"):
            row[f"latency_{k}_us"] = m["latency_us"][k]
        dev = m.get("device") or {}
        row["device_latency_p50_us"] = (dev.get("latency_us") or {}).get("p50")
        row["device_latency_p99_us"] = (dev.get("latency_us") or {}).get("p99")
        row["device_throughput_ips"] = dev.get("throughput_ips")
        row["device_peak_rss_mb"] = dev.get("peak_rss_mb")
        row["photo_p50_us"] = (m.get("photo_latency_us") or {}).get("p50")
        writer.writerow(row)
    return buf.getvalue()


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by the terminal and Markdown)."""
    with_device = report.get("device") is not None
    header = [
        "model",
        "quantization",
        "size",
        "accuracy",
        "agreement",
        "max Δp",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "mean µs",
        "img/s",
        "load ms",
        "RSS MB (+model)",
    ]
    with_photos = any(m.get("photo_latency_us") for m in report["models"])
    if with_device:
        header += ["device p50 µs", "device img/s"]
    if with_photos:
        header += ["photo → answer p50 ms"]
    rows = []
    for m in report["models"]:
        lat = m["latency_us"]
        rss = (
            "-"
            if m.get("peak_rss_mb") is None
            else f"{m['peak_rss_mb']:.1f} (+{m['model_rss_mb']:.1f})"
        )
        name = f"{m['name']} (tf.function)" if m["format"] == "keras" else m["name"]
        row = [
            name,
            str(m["quantization"]),
            _kib(m["size_bytes"]),
            f"{m['accuracy']:.2%}",
            "-" if m["agreement"] is None else f"{m['agreement']:.2%}",
            _fmt(m.get("prob_diff_max"), ".4f"),
            f"{lat['p50']:.1f}",
            f"{lat['p90']:.1f}",
            f"{lat['p99']:.1f}",
            f"{lat['mean']:.1f}",
            f"{m['throughput_ips']:,.0f}",
            f"{m['load_ms']:.1f}",
            rss,
        ]
        if with_device:
            dev = m.get("device") or {}
            row += [device_p50_text(dev), _fmt(dev.get("throughput_ips"), ",.0f")]
        if with_photos:
            photo = m.get("photo_latency_us") or {}
            row.append(_fmt(photo["p50"] / 1e3, ".2f") if photo else "-")
        rows.append(row)
        if m.get("latency_model_predict_us"):
            lp = m["latency_model_predict_us"]
            extra = [
                f"{m['name']} (model.predict)",
                "",
                "",
                "",
                "",
                "",
                f"{lp['p50']:.1f}",
                f"{lp['p90']:.1f}",
                f"{lp['p99']:.1f}",
                f"{lp['mean']:.1f}",
                "",
                "",
                "",
            ]
            rows.append(extra + (["", ""] if with_device else []) + ([""] if with_photos else []))
    return header, rows


def _short_count(n: float) -> str:
    return f"{n / 1000:,.0f}k" if n >= 10000 else f"{n:,.0f}"


def rich_table(report: dict[str, Any]):
    """A compact summary as a Rich table (all columns are in report.md and report.csv)."""
    from rich import box
    from rich.table import Table

    ds = report["dataset"]
    with_device = report.get("device") is not None
    table = Table(
        title=f"edgeship bench: {ds['images']} {ds['name']} test images, "
        f"{report['settings']['runs']} batch-1 calls per model",
        caption="batch-1 latency after warm-up; RSS: peak of a process with only that model",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    header = ["model", "KiB", "acc %", "agree %", "p50 µs", "p99 µs", "img/s", "RSS MB"]
    header += ["dev p50 µs"] if with_device else []
    rows: list[tuple[list[str], str | None]] = []
    for m in report["models"]:
        lat = m["latency_us"]
        name = "keras tf.fn" if m["format"] == "keras" else m["name"]
        row = [
            name,
            f"{m['size_bytes'] / 1024:,.0f}",
            f"{m['accuracy'] * 100:.2f}",
            "-" if m["agreement"] is None else f"{m['agreement'] * 100:.2f}",
            f"{lat['p50']:,.1f}",
            f"{lat['p99']:,.1f}",
            _short_count(m["throughput_ips"]),
            _fmt(m.get("peak_rss_mb")),
        ]
        if with_device:
            row.append(device_p50_text(m.get("device")))
        rows.append((row, None))
        if m.get("latency_model_predict_us"):
            lp = m["latency_model_predict_us"]
            extra = ["keras predict", "", "", "", f"{lp['p50']:,.0f}", f"{lp['p99']:,.0f}"]
            rows.append((extra + [""] * (len(header) - len(extra)), "dim"))
    for i, h in enumerate(header):
        width = max([len(r[i]) for r, _ in rows] + [1])
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0, min_width=width)
    for row, style in rows:
        table.add_row(*row, style=style)
    return table


def flipped_section(report: dict[str, Any], plots: list[str]) -> list[str]:
    """report.md's 'Flipped images': per variant, the images whose top-1 differs from Keras's."""
    variants = [m for m in report["models"] if m.get("flipped") and m["format"] == "tflite"]
    if not variants:
        return []
    n = report["dataset"]["images"]
    lines = [
        "",
        "## Flipped images",
        "",
        f"Test images (of {n}) whose top-1 class differs from the Keras model's: "
        "(1 - agreement) x images. The gallery shows them, the surest Keras answer first, with "
        "both answers and confidences; `report.json` lists their indices (`flipped.indices`, "
        "into the images measured).",
        "",
        "| model | flipped | agreement | first indices | gallery |",
        "|---|---:|---:|---|---|",
    ]
    for m in variants:
        f = m["flipped"]
        gallery = f"flipped_{m['name']}.png"
        first = ", ".join(str(i) for i in f["indices"][:8]) + (" ..." if f["count"] > 8 else "")
        lines.append(
            f"| {m['name']} | {f['count']} | {_fmt(m['agreement'], '.2%')} | {first or '-'} | "
            + (f"[{gallery}]({gallery})" if gallery in plots else "-")
            + " |"
        )
    return lines


def markdown(report: dict[str, Any], plots: list[str]) -> str:
    """`report.md`: the table, the settings, the host, budgets, failures, and the plots."""
    header, rows = table_rows(report)
    host, ds, st, timer = report["host"], report["dataset"], report["settings"], report["timer"]
    lines = [
        f"# edgeship benchmark: `{report['run']}`",
        "",
        f"{ds['images']} test images of **{ds['name']}** (`{ds['source']}`), "
        f"created {report['created']}, {report['wall_seconds']} s wall.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "How to read it:",
        "",
        "- **accuracy**: top-1 on the test images above; **agreement**: share of images where "
        "the model's top-1 class equals the Keras model's; **max Δp**: largest absolute "
        "difference of any class probability against Keras.",
        f"- **latency**: batch-1 calls after {st['warmup']} warm-up calls, {st['runs']} timed "
        f"calls cycling over {st['latency_images']} test images, threads="
        f"{st['threads'] or 'default'}. TFLite: `EdgeClassifier.predict_proba` on raw uint8 "
        "pixels (preprocessing, invoke, dequantization: the code that ships). Keras: a compiled "
        "`tf.function` call (float32 input, `.numpy()` output); `model.predict` is shown "
        f"separately ({st['predict_runs']} calls) because its per-call overhead dominates.",
        *(
            [
                "- **photo → answer**: from the `--test-data` files on disk, one call per photo "
                "(the first 50): read, decode to the model's size, preprocess, invoke, "
                "postprocess (`edge_runtime.image.stages.classify_photo`, what `serve` runs)."
            ]
            if any(m.get("photo_latency_us") for m in report["models"])
            else []
        ),
        f"- **timer overhead** ({timer['clock']}): median {timer['median_ns']:.0f} ns, "
        f"p99 {timer['p99_ns']:.0f} ns per measurement (not subtracted).",
        f"- **img/s**: throughput of calls on a batch of {st['batch']} images (Keras: the "
        "compiled call).",
        "- **RSS MB (+model)**: peak resident memory (`VmHWM`, else `ru_maxrss`) of a fresh "
        "subprocess that loads only that model and runs a batch-1 and a batch call; in "
        "brackets the part above the same process's baseline after importing its runtime "
        "(TensorFlow+Keras for Keras, edge_runtime+LiteRT for TFLite).",
    ]
    if report["models"]:
        base = ", ".join(
            f"{m['name']} {m['baseline_rss_mb']:.1f}"
            for m in report["models"]
            if m.get("baseline_rss_mb") is not None
        )
        bare = [m["bare_python_rss_mb"] for m in report["models"] if m.get("bare_python_rss_mb")]
        if base:
            lines.append(
                f"- baselines after the runtime's imports (MB): {base}; the bare "
                f"interpreter before any import: {min(bare):.1f}-{max(bare):.1f} MB."
            )
    lines += ["", "## Per-class accuracy", ""]
    names = ds["class_names"]
    models = report["models"]
    lines.append("| class | " + " | ".join(m["name"] for m in models) + " |")
    lines.append("|---|" + "---:|" * len(models))
    for i, cname in enumerate(names):
        cells = [_fmt(m["per_class_accuracy"][i], ".1%") for m in models]
        lines.append(f"| {cname} | " + " | ".join(cells) + " |")
    lines += flipped_section(report, plots)
    budgets = report["budgets"]
    lines += ["", "## Budgets", ""]
    if not budgets["checks"]:
        lines.append("No budget set.")
    else:
        lines.append(f"**{'PASSED' if budgets['passed'] else 'FAILED'}**")
        lines.append("")
        for c in budgets["checks"]:
            mark = "ok" if c["ok"] else "**MISSED**"
            lines.append(
                f"- {c['model']}: {c['budget']} = {c['value']} (limit {c['op']} "
                f"{c['limit']}): {mark}"
            )
    if report["failed"]:
        lines += ["", "## Models that could not be measured", ""]
        lines += [f"- `{f['path']}`: {f['error']}" for f in report["failed"]]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    versions = ", ".join(f"{k} {v}" for k, v in host["versions"].items())
    lines += [
        "",
        "## Host",
        "",
        f"- machine: {host['machine']}, CPU: {host['cpu']} ({host['cpu_count']} logical cores)",
        f"- system: {host['system']}, Python {host['python']}",
        f"- TFLite backend: {host['tflite_backend']}",
        f"- versions: {versions}",
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.removesuffix('.png')}]({p})\n" for p in plots]
    return "\n".join(lines) + "\n"


def write_reports(
    report: dict[str, Any], out: Path, x: np.ndarray, y: np.ndarray, plots: bool = True
) -> dict[str, Any]:
    """Write plots, `report.csv`, `report.md`, then `report.json` (last) into `out`."""
    make_output_dir(out)
    written: list[str] = []
    if plots:
        from edgeship.bench.plots import write_plots

        written = write_plots(report, out, x, y)
    report["plots"] = written
    if "_started" in report:
        report["wall_seconds"] = round(time.perf_counter() - report.pop("_started"), 2)
    data = clean(report)
    atomic_write_text(out / "report.csv", csv_text(data))
    atomic_write_text(out / "report.md", markdown(data, written))
    atomic_write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
    return data
