"""`python -m edge_runtime predict|bench|info|doctor|serve`: argparse only (the device has no
Typer).

The predict formatting lives here (`predict_lines`) so `edgeship predict` prints the same.
Errors: any EdgeshipError becomes `error: <message>` on stderr and its exit code (2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from edge_runtime.errors import EdgeshipError
from edge_runtime.model_bounds import DEFAULT_MAX_MODEL_MB, max_model_option
from edge_runtime.native_log import filtered_native_stderr
from edge_runtime.records import DEFAULT_TOP_K, format_prediction


def predict_lines(
    model: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    top_k: int = DEFAULT_TOP_K,
    as_json: bool = False,
    threads: int | None = None,
    backend: str | None = None,
    invert: str = "auto",
    labels: str | os.PathLike[str] | None = None,
    full_decode: bool = False,
    max_model_mb: float = DEFAULT_MAX_MODEL_MB,
) -> list[str]:
    """Classify image files with a .tflite model; one output line per image.

    `labels`: a labels file (one class name per line, output order) naming the classes;
    `full_decode`: decode photos in full, not at the model's size (docs/photos.md).
    """
    from edge_runtime.classifier import EdgeClassifier

    if top_k < 1:
        raise _usage(f"--top-k must be >= 1. Received: {top_k}")
    if not images:
        raise _usage("Pass at least one image. Received: none")
    clf = EdgeClassifier.load(
        model,
        num_threads=threads,
        backend=backend,
        invert=invert,
        labels=labels,
        max_model_mb=max_model_mb,
    )
    clf.decode_to_size = not full_decode
    predictions = clf.predict([os.fspath(p) for p in images])
    return [
        format_prediction(os.fspath(image), pred, top_k, as_json)
        for image, pred in zip(images, predictions, strict=True)
    ]


def info_dict(
    model: str | os.PathLike[str],
    backend: str | None = None,
    labels: str | os.PathLike[str] | None = None,
    max_model_mb: float = DEFAULT_MAX_MODEL_MB,
) -> dict[str, Any]:
    """What `info` reports: model tensors and metadata, backend, library versions."""
    import numpy as np

    from edge_runtime.classifier import EdgeClassifier

    clf = EdgeClassifier.load(model, backend=backend, labels=labels, max_model_mb=max_model_mb)
    out = clf.describe()
    out["numpy"] = np.__version__
    try:
        import PIL

        out["pillow"] = PIL.__version__
    except ImportError:  # pragma: no cover - pillow is a dependency
        out["pillow"] = None
    out["python"] = platform.python_version()
    out["machine"] = platform.machine()
    return out


def _usage(message: str) -> EdgeshipError:
    from edge_runtime.errors import EdgeRuntimeError

    return EdgeRuntimeError(message)


def _info_text(info: dict[str, Any]) -> str:
    def tensor(t: dict[str, Any]) -> str:
        q = t["quantization"]
        quant = f"scale={q['scale']:.6g} zero_point={q['zero_point']}" if q else "not quantized"
        return f"{t['name']} shape={t['shape_signature']} {t['dtype']} ({quant})"

    meta = info["metadata"]
    lines = [
        f"model:    {info['model']} ({info['size_bytes']} bytes)",
        f"backend:  {info['backend']} {info['backend_version']} (numpy {info['numpy']}, "
        f"python {info['python']}, {info['machine']})",
        f"input:    {tensor(info['input'])}",
        f"output:   {tensor(info['output'])}, "
        + (
            f"probabilities (the model ends in {info['output_head']})"
            if info["outputs_probabilities"] and info["output_head"] in ("SOFTMAX", "LOGISTIC")
            else "probabilities (softmax quantization)"
            if info["outputs_probabilities"]
            else "scores: a sigmoid is applied"
            if info.get("output_units") == 1
            else "scores: a softmax is applied"
        )
        + (
            ", one unit: a binary classifier, classes [1 - p, p]"
            if info.get("output_units") == 1
            else ""
        ),
        f"image:    {info['image_shape']} raw pixel * {_number(info['raw_pixel_scale'])} + "
        f"{_number(info['raw_pixel_offset'])} (from {info['raw_pixel_scaling_source']})",
        f"classes:  {info['num_classes']}: {', '.join(info['class_names'][:12])}"
        + (" ..." if info["num_classes"] > 12 else "")
        + f" (from {info['class_names_source']})",
    ]
    standard = info.get("standard_metadata")
    if standard:
        norm = standard["normalization"]
        read = [
            f"{k}={standard[k]!r}" for k in ("name", "version", "author", "license") if standard[k]
        ]
        if standard["color_space"]:
            read.append(f"color_space={standard['color_space']}")
        if norm:
            read.append(f"mean={_number(norm['mean'])} std={_number(norm['std'])}")
        if standard["labels_file"]:
            read.append(
                f"labels={standard['labels_file']} ({standard['labels']} names)"
                if standard["labels"] is not None
                else f"labels={standard['labels_file']} (unreadable)"
            )
        lines.append("standard: TFLITE_METADATA " + (" ".join(read) or "(empty)"))
    if meta is None and standard:
        lines.append("metadata: no edgeship block (the standard metadata above is used)")
    elif meta is None:
        lines.append(
            "metadata: none (class names only from --labels; "
            + (
                "raw 0-255 pixels go in as floats: if the model expects [0, 1] or [-1, 1], "
                "embed its scaling with edgeship label --input-scale S --input-offset O)"
                if info["input"]["dtype"].startswith("float")
                else "raw pixels go in as the input tensor's 8-bit values)"
            )
        )
    else:
        quant = meta.get("quantization") or {}
        metrics = meta.get("metrics") or {}
        lines.append(
            f"metadata: model={meta.get('model')} quantization={quant.get('mode')} "
            f"test_accuracy={metrics.get('test_accuracy')} "
            f"background={(meta.get('input') or {}).get('background')}"
        )
    return "\n".join(lines)


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning (unusable standard metadata, ...) as one `warning: ...` line on stderr."""
    return f"warning: {message}\n"


def _number(value: Any) -> str:
    """A scale, offset, mean or std: one number, or one per channel."""
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
    return f"{value:.6g}"


class _OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit 2, like the
    `edgeship` command's: `error: <message>. See '<prog> --help'.` (`--help` is unchanged).
    Subcommand parsers are of this class too (argparse makes them with the parent's)."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        self.exit(2, f"error: {message.rstrip('.')}. See '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m edge_runtime`."""
    parser = _OneLineErrorParser(
        prog="python -m edge_runtime",
        description="Run a .tflite image classifier without TensorFlow.",
    )
    from edge_runtime._version import version

    parser.add_argument("--version", action="version", version=f"edgeship {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="the .tflite model file")
        p.add_argument(
            "--backend",
            default=None,
            help="ai_edge_litert, tflite_runtime or tensorflow (default: the first installed)",
        )
        max_model_option(p)

    def labels_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--labels",
            default=None,
            metavar="FILE",
            help="class names, one per line in output order (replaces the model's own)",
        )

    def full_decode_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--full-decode",
            action="store_true",
            help="decode photos in full before resizing, not at the model's size (slower; "
            "docs/photos.md)",
        )

    p = sub.add_parser("predict", help="classify image files")
    common(p)
    labels_option(p)
    full_decode_option(p)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"classes to report (default {DEFAULT_TOP_K})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="interpreter threads (default: the runtime's)",
    )
    p.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default="auto",
        help="invert images (auto: when the model expects a dark background and the "
        "image's border is light)",
    )

    p = sub.add_parser("bench", help="time the model on this machine")
    common(p)
    p.add_argument("--runs", type=int, default=200, metavar="N", help="timed calls (default 200)")
    p.add_argument(
        "--warmup", type=int, default=20, metavar="N", help="untimed calls first (default 20)"
    )
    p.add_argument(
        "--threads",
        default=None,
        metavar="N[,N...]",
        help="interpreter threads; 1,2,4 measures each (JSON lines)",
    )
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per call (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--image",
        default=None,
        metavar="PHOTO",
        help="time a photo's way to an answer instead, per stage: read, decode, preprocess, "
        "invoke, postprocess, total (p50, p99)",
    )
    full_decode_option(p)

    p = sub.add_parser("info", help="inputs, outputs, quantization, metadata, backend")
    common(p)
    labels_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("doctor", help="is this device ready? (board, OS, runtime, heat, power)")
    p.add_argument("model", nargs="?", help="a .tflite model: also check it loads with XNNPACK")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="read /proc, /sys, /etc under DIR (a fake device tree; or set EDGESHIP_ROOT)",
    )
    p.add_argument("--dir", default=None, help="the install folder (free disk; default: cwd)")

    from edge_runtime.serve.options import add_serve_parser

    add_serve_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> None:
    if args.command == "predict":
        lines = predict_lines(
            args.model,
            args.images,
            top_k=args.top_k,
            as_json=args.json,
            threads=args.threads,
            backend=args.backend,
            invert=args.invert,
            labels=args.labels,
            full_decode=args.full_decode,
            max_model_mb=args.max_model_mb,
        )
        print("\n".join(lines))
    elif args.command == "bench" and args.image is not None:
        _photo_bench(args)
    elif args.command == "bench":
        from edge_runtime.device.bench import parse_threads, run_bench_threads

        try:
            results = run_bench_threads(
                args.model,
                parse_threads(args.threads),
                runs=args.runs,
                warmup=args.warmup,
                batch=args.batch,
                backend=args.backend,
                max_model_mb=args.max_model_mb,
            )
        except ValueError as err:
            raise _usage(str(err)) from None
        for result in results:
            data = result.to_dict()
            if args.json:
                print(json.dumps(data))
                continue
            lat = data["latency_us"]
            print(
                f"{data['model']}: threads {data['threads'] or 'default'}, load "
                f"{data['load_ms']:.1f} ms, latency p50 {lat['p50']:.1f} us "
                f"p90 {lat['p90']:.1f} us p99 {lat['p99']:.1f} us (batch {data['batch']}), "
                f"{data['throughput_ips']:.0f} images/s, peak RSS {data['peak_rss_mb']:.1f} MB, "
                f"{data['backend']} {data['backend_version']} on {data['machine']}"
            )
            before, after = data["device_before"], data["device_after"]
            if before["temperature_c"] is not None:
                print(f"  temperature {before['temperature_c']} -> {after['temperature_c']} °C")
            if data["throttled"]:
                print(
                    f"  THROTTLED during this run ({', '.join(after['throttled_flags'])}): "
                    "these figures are not the board's best; see `python -m edge_runtime doctor`"
                )
    else:
        info = info_dict(
            args.model, backend=args.backend, labels=args.labels, max_model_mb=args.max_model_mb
        )
        print(json.dumps(info) if args.json else _info_text(info))


def _photo_bench(args: argparse.Namespace) -> None:
    """`bench MODEL --image PHOTO`: each stage's p50 and p99 (and the total), in ms."""
    from edge_runtime.device.bench import parse_threads
    from edge_runtime.image.stages import photo_bench

    try:
        threads = parse_threads(args.threads)
        if len(threads) > 1 or args.batch != 1:
            raise ValueError(
                "--image times one photo at a time with one thread count. "
                f"Received: --threads {args.threads} --batch {args.batch}"
            )
        result = photo_bench(
            args.model,
            args.image,
            runs=args.runs,
            warmup=args.warmup,
            threads=threads[0],
            backend=args.backend,
            full_decode=args.full_decode,
            max_model_mb=args.max_model_mb,
        )
    except ValueError as err:
        raise _usage(str(err)) from None
    data = result.to_dict()
    if args.json:
        print(json.dumps(data))
        return
    width, height = data["image_size"]
    print(
        f"{data['model']} on {data['image']} ({width}x{height}): {data['label']}, "
        f"{data['runs']} runs"
    )
    print(f"  {'stage':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for stage, row in data["stages_us"].items():
        print(f"  {stage:<12}{row['p50'] / 1e3:>10.3f}{row['p99'] / 1e3:>10.3f}")


def _serve(args: argparse.Namespace) -> None:
    """`serve`: load and bind with the native chatter filtered, then serve with stderr as is
    (the filter holds stderr back until it ends: a service's log must flow)."""
    from edge_runtime.serve.options import exposure_warning, options_from_args
    from edge_runtime.serve.server import prepare, run

    options = options_from_args(args)
    for line in options.secret_warnings():  # --strict-permissions refused them already
        print(f"warning: {line}", file=sys.stderr, flush=True)
    with filtered_native_stderr():
        service, sock = prepare(options)
    warning = exposure_warning(options)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    run(service, sock)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m edge_runtime`; returns the exit code."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = one_line_warning
    try:
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "serve":
            _serve(args)
            return 0
        with filtered_native_stderr():
            _run(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except EdgeshipError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # The reader went away (`... | head -1`): stop quietly, the standard way
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        _stdout_to_devnull()
        return 1
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Print the doctor's report; exit 1 when a check failed."""
    from edge_runtime.device.doctor import doctor_json, doctor_text, exit_code, run_doctor

    for option, folder in (("--root", args.root), ("--dir", args.dir)):
        if folder is not None and not Path(folder).is_dir():
            raise _usage(f"{option} must name an existing folder. Received: {option}={folder}")
    report = run_doctor(root=args.root, install_dir=args.dir, model=args.model)
    print(doctor_json(report) if args.json else doctor_text(report))
    return exit_code(report)


def _stdout_to_devnull() -> None:
    """Point stdout's file descriptor at /dev/null so the exit-time flush cannot fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced stdout (tests): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
