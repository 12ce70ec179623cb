"""The report's figures (matplotlib, Agg backend): each function writes one PNG atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.files import atomic_path
from edgeship.bench.testdata import spread_indices

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_vs_latency(models: list[dict], path: Path) -> Path:
    """Accuracy against batch-1 p50 latency; marker area grows with the file size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = np.array([m["size_bytes"] for m in models], dtype=float)
    area = 80 + 900 * sizes / sizes.max()
    from matplotlib.lines import Line2D

    handles = []
    for i, (m, a) in enumerate(zip(models, area, strict=True)):
        color = f"C{i % 10}"
        marker = "s" if m["format"] == "keras" else "o"
        ax.scatter(
            m["latency_us"]["p50"],
            m["accuracy"] * 100,
            s=a,
            alpha=0.5,
            color=color,
            marker=marker,
            edgecolors="black",
        )
        label = (
            f"{m['name']}: {m['accuracy']:.2%}, {m['size_bytes'] / 1024:,.0f} KiB, "
            f"{m['latency_us']['p50']:,.1f} µs"
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                color=color,
                linestyle="",
                markersize=8,
                markeredgecolor="black",
                alpha=0.7,
                label=label,
            )
        )
    ax.legend(
        handles=handles,
        fontsize=8,
        loc="best",
        title="model: accuracy, size, p50",
        title_fontsize=8,
    )
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency p50 (µs, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker size = model size on disk)")
    ax.grid(True, which="both", alpha=0.3)
    lo = min(m["accuracy"] for m in models) * 100
    hi = max(m["accuracy"] for m in models) * 100
    pad = max(0.5, (hi - lo) * 0.4)
    ax.set_ylim(lo - pad, hi + pad)
    xs = [m["latency_us"]["p50"] for m in models]
    ax.set_xlim(min(xs) / 2, max(xs) * 3)
    return _save(fig, path)


def latency_distributions(models: list[dict], path: Path) -> Path:
    """Box plots of every batch-1 latency sample per model (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(models) + 1.8))
    data = [m["latency_samples_us"] for m in models]
    labels = [
        f"{m['name']}\n(tf.function)" if m["format"] == "keras" else m["name"] for m in models
    ]
    import matplotlib

    horizontal = (
        {"orientation": "horizontal"}
        if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
        else {"vert": False}
    )
    ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2}, **horizontal)
    ax.set_yticks(range(1, len(models) + 1), labels)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("batch-1 latency (µs, log scale); whiskers p1–p99")
    ax.set_title(f"Latency distribution ({len(data[0])} calls each)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _save(fig, path)


def sizes(models: list[dict], path: Path) -> Path:
    """Horizontal bars: size on disk per model, in KiB."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(models) + 1.5))
    kib = [m["size_bytes"] / 1024 for m in models]
    colors = ["tab:orange" if m["format"] == "keras" else "tab:blue" for m in models]
    bars = ax.barh([m["name"] for m in models], kib, color=colors)
    ax.bar_label(bars, labels=[f"{k:,.0f} KiB" for k in kib], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("size on disk (KiB)")
    ax.set_title("Model size")
    ax.set_xlim(0, max(kib) * 1.2)
    return _save(fig, path)


def confusion(model: dict, class_names: list[str], path: Path) -> Path:
    """The confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(model["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(cm, cmap="Blues", interpolation="nearest")
    n = len(class_names)
    # One name per tick and a count per cell read well up to a few dozen classes; a 1001-class
    # model would draw a million texts (minutes): there, index ticks and the colours only.
    if n <= MAX_NAMED_CLASSES:
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > threshold else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {model['name']} (accuracy {model['accuracy']:.2%})")
    return _save(fig, path)


# Past this many classes the confusion matrix drops its names and counts, and each probability
# plot shows the image's MAX_BARS likeliest classes (the true one among them) instead of all.
MAX_NAMED_CLASSES = 30
MAX_BARS = 10


def _show_image(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="binary")  # the tutorial's colour map
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def prediction_grid(
    name: str, x: np.ndarray, y: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path
) -> Path:
    """The tutorial's 5x5 grid: test images, predicted (true) label; blue right, red wrong."""
    plt = _pyplot()
    fig = plt.figure(figsize=(10, 11))
    for i in range(min(25, len(x))):
        ax = fig.add_subplot(5, 5, i + 1)
        _show_image(ax, x[i])
        pred = int(probs[i].argmax())
        color = "blue" if pred == int(y[i]) else "red"
        ax.set_xlabel(
            f"{class_names[pred]}\n(true: {class_names[int(y[i])]})", color=color, fontsize=9
        )
    fig.suptitle(f"{name}: predicted label (true label); blue = right, red = wrong")
    fig.tight_layout()
    return _save(fig, path)


def probability_grid(
    name: str, x: np.ndarray, y: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path
) -> Path:
    """The tutorial's 5x3 grid of (image, probability bars) pairs: predicted red, true blue.
    With more than MAX_BARS classes, each plot shows the image's likeliest classes."""
    plt = _pyplot()
    rows, cols = 5, 3
    fig = plt.figure(figsize=(2 * 2 * cols, 2 * rows + 0.6))
    for i in range(min(rows * cols, len(x))):
        pred, true = int(probs[i].argmax()), int(y[i])
        # All classes, as in the tutorial; with many, the image's most likely ones (and the true)
        shown = np.arange(len(class_names))
        if len(shown) > MAX_BARS:
            shown = np.argsort(-probs[i], kind="stable")[:MAX_BARS]
            if true not in shown:
                shown[-1] = true
            shown = np.sort(shown)
        n = len(shown)
        ax = fig.add_subplot(rows, 2 * cols, 2 * i + 1)
        _show_image(ax, x[i])
        color = "blue" if pred == true else "red"
        ax.set_xlabel(
            f"{class_names[pred]} {100 * probs[i][pred]:2.0f}% ({class_names[true]})",
            color=color,
            fontsize=8,
        )
        ax = fig.add_subplot(rows, 2 * cols, 2 * i + 2)
        bars = ax.bar(range(n), probs[i][shown], color="#777777")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(n))
        ax.set_xticklabels(
            [str(k) for k in shown], fontsize=6, rotation=90 if len(class_names) > MAX_BARS else 0
        )
        ax.set_yticks([])
        where = {int(k): b for k, b in zip(shown, bars, strict=True)}
        where[pred].set_color("red")
        where[true].set_color("blue")
    fig.suptitle(f"{name}: class probabilities (bar red = predicted, blue = true)")
    fig.tight_layout()
    return _save(fig, path)


def flipped_gallery(
    name: str,
    x: np.ndarray,
    indices: list[int],
    keras_probs: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    path: Path,
    limit: int = 30,
) -> Path:
    """The images whose top-1 differs from Keras's, surest Keras answer first: each with
    Keras's class and confidence and the variant's."""
    plt = _pyplot()
    order = sorted(indices, key=lambda i: -float(keras_probs[i].max()))[:limit]
    cols = 6
    rows = max(1, -(-len(order) // cols))
    fig = plt.figure(figsize=(2.2 * cols, 2.6 * rows + 0.6), layout="constrained")
    for k, i in enumerate(order):
        ax = fig.add_subplot(rows, cols, k + 1)
        _show_image(ax, x[i])
        kp, vp = int(keras_probs[i].argmax()), int(probs[i].argmax())
        ax.set_title(f"#{i}", fontsize=8)
        ax.set_xlabel(
            f"Keras: {class_names[kp]} {keras_probs[i][kp]:.0%}\n"
            f"{name}: {class_names[vp]} {probs[i][vp]:.0%}",
            fontsize=8,
            color="red",
        )
    shown = f"{len(order)} of {len(indices)}" if len(order) < len(indices) else f"{len(order)}"
    fig.suptitle(
        f"{name}: {shown} images whose top-1 differs from Keras's, surest Keras answer first"
    )
    return _save(fig, path)


def write_plots(report: dict[str, Any], out: Path, x: np.ndarray, y: np.ndarray) -> list[str]:
    """Every figure for `report` into `out`; returns the file names written."""
    models = report["models"]
    if not models:
        return []
    names = report["dataset"]["class_names"]
    written = [
        accuracy_vs_latency(models, out / "accuracy_vs_latency.png"),
        latency_distributions(models, out / "latency_distributions.png"),
        sizes(models, out / "sizes.png"),
    ]
    by_name = {m["name"]: m for m in models}
    tflite = [m for m in models if m["format"] == "tflite"]
    focus = by_name.get("int8") or (tflite[-1] if tflite else models[0])
    for m in dict.fromkeys(k for k in ("keras", focus["name"]) if k in by_name):
        written.append(confusion(by_name[m], names, out / f"confusion_{m}.png"))
    probs = focus["_probs"]
    shown = spread_indices(y, 25)
    written.append(
        prediction_grid(
            focus["name"],
            x[shown],
            y[shown],
            probs[shown],
            names,
            out / f"predictions_{focus['name']}.png",
        )
    )
    shown = spread_indices(y, 15)
    written.append(
        probability_grid(
            focus["name"],
            x[shown],
            y[shown],
            probs[shown],
            names,
            out / f"probabilities_{focus['name']}.png",
        )
    )
    if "keras" in by_name:
        for m in tflite:
            flipped = m.get("flipped") or {}
            if flipped.get("indices"):
                written.append(
                    flipped_gallery(
                        m["name"],
                        x,
                        flipped["indices"],
                        by_name["keras"]["_probs"],
                        m["_probs"],
                        names,
                        out / f"flipped_{m['name']}.png",
                    )
                )
    return [p.name for p in written]
