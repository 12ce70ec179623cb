"""The `edgeship` command: a thin Typer app that mounts each stage's commands.

Library code raises `EdgeshipError`; this is the one place that turns it into one line on
stderr and an exit code. Stage modules import TensorFlow lazily, so `--help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from edge_runtime.errors import EdgeshipError

# Top-level modules of the `desktop` extra: a command that needs one on a machine with only
# `edgeship[edge]` gets one line that names the extra, not an ImportError traceback.
DESKTOP_MODULES = frozenset({"tensorflow", "keras", "matplotlib", "psutil"})


class _ErrorHandlingGroup(TyperGroup):
    """A click group that reports errors as one `error: ...` line on stderr and an exit code.

    `EdgeshipError` (what the library raises) exits with its `exit_code`; a usage error (a
    missing option, `--epochs abc`) exits 2, one line too instead of a framed usage box; a
    missing module of the `desktop` extra exits 2 with the install command.
    """

    def invoke(self, ctx):  # noqa: D102 - click API
        try:
            return super().invoke(ctx)
        except EdgeshipError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except ImportError as err:
            missing = (err.name or "").split(".")[0]
            if missing not in DESKTOP_MODULES:
                raise
            command = " ".join(filter(None, [ctx.command_path, ctx.invoked_subcommand]))
            typer.echo(
                f"error: `{command}` needs {missing}, part of the desktop extra: "
                f"pip install 'edgeship[desktop]'. Received: {type(err).__name__}: {err}",
                err=True,
            )
            raise typer.Exit(2) from None

    def main(self, *args, standalone_mode: bool = True, **kwargs):  # noqa: D102 - click API
        kwargs["standalone_mode"] = False  # by keyword only: *args may not reach it
        if not standalone_mode:
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **kwargs)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        except Exception as err:
            # Click's usage errors (vendored by Typer): `format_message()` and `exit_code`.
            if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
                raise
            if type(err).__name__ == "NoArgsIsHelpError" and hasattr(err, "show"):
                err.show()
            else:
                command = getattr(getattr(err, "ctx", None), "command_path", self.name)
                message = err.format_message().rstrip(".")
                typer.echo(f"error: {message}. See '{command} --help'.", err=True)
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_ErrorHandlingGroup,
    name="edgeship",
    help="Train a Keras image classifier, quantize it to TensorFlow Lite, benchmark and deploy it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    """`--version`: print `edgeship X.Y.Z` and stop (before any command runs)."""
    if value:
        from edge_runtime._version import version

        typer.echo(f"edgeship {version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print edgeship's version and exit.",
        ),
    ] = False,
) -> None:
    """Train a Keras image classifier, quantize it to TensorFlow Lite, benchmark and deploy it."""


def _predict_command(
    model: Annotated[Path, typer.Argument(help="The .tflite model file.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Classes to report per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
    threads: Annotated[int | None, typer.Option(help="Interpreter threads.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="ai_edge_litert, tflite_runtime or tensorflow (default: first found)."),
    ] = None,
    invert: Annotated[str, typer.Option(help="Invert images: auto, yes or no.")] = "auto",
    labels: Annotated[
        Path | None,
        typer.Option(help="Class names, one per line in output order (replaces the model's)."),
    ] = None,
) -> None:
    """Classify images with a .tflite model (the same code as `python -m edge_runtime predict`)."""
    from edge_runtime.cli import predict_lines
    from edge_runtime.native_log import filtered_native_stderr

    with filtered_native_stderr():
        lines = predict_lines(
            model,
            images,
            top_k=top_k,
            as_json=as_json,
            threads=threads,
            backend=backend,
            invert=invert,
            labels=labels,
        )
    typer.echo("\n".join(lines))


def _label_command(
    model: Annotated[Path, typer.Argument(help="The .tflite model file (changed in place).")],
    labels: Annotated[
        Path | None,
        typer.Option(help="Class names, one per line, in the model's output order."),
    ] = None,
    input_scale: Annotated[
        float | None,
        typer.Option(
            help="Raw pixel p becomes p * S + O: S (e.g. 0.00392157 for [0, 1]).", metavar="S"
        ),
    ] = None,
    input_offset: Annotated[
        float | None, typer.Option(help="O (e.g. -1 with S = 1/127.5 for [-1, 1]).", metavar="O")
    ] = None,
    author: Annotated[
        str | None, typer.Option(help="Author, in the standard TFLite metadata.")
    ] = None,
    license: Annotated[  # noqa: A002 - the option's name
        str | None, typer.Option(help="License, in the standard TFLite metadata.")
    ] = None,
) -> None:
    """Embed class names and/or pixel scaling into any .tflite, atomically (edgeship's block
    and the standard TFLite metadata, with the labels packed in)."""
    from edge_runtime.metadata.labeling import label_model
    from edge_runtime.native_log import filtered_native_stderr

    with filtered_native_stderr():
        meta = label_model(
            model,
            labels,
            input_scale=input_scale,
            input_offset=input_offset,
            author=author,
            license=license,
        )
    written = []
    if labels is not None:
        names = meta["class_names"]
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        written.append(f"{len(names)} class names ({shown})")
    if input_scale is not None or input_offset is not None:
        block = meta["input"]
        sign = "-" if block["offset"] < 0 else "+"
        written.append(f"pixel scaling p * {block['scale']:.6g} {sign} {abs(block['offset']):.6g}")
    written += [f"{k} {v!r}" for k, v in (("author", author), ("license", license)) if v]
    typer.echo(f"{model}: {' and '.join(written)} written")


def _mount() -> None:
    """Attach each stage's commands to `app`."""
    from edgeship.bench.cli import bench_command
    from edgeship.convert.cli import convert_command
    from edgeship.deploy.cli import deploy_app
    from edgeship.pipeline import pipeline_command
    from edgeship.train.cli import train_command
    from edgeship.tune.cli import tune_command

    app.command("train")(train_command)
    app.command("convert")(convert_command)
    app.command("bench")(bench_command)
    app.command("pipeline")(pipeline_command)
    app.command("tune")(tune_command)
    app.add_typer(deploy_app, name="deploy")
    app.command("predict")(_predict_command)
    app.command("label")(_label_command)


_mount()


def main() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) is noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    from edge_runtime.cli import one_line_warning

    warnings.formatwarning = one_line_warning  # unusable standard metadata: one line
    app()


if __name__ == "__main__":  # `python -m edgeship.cli` as `python -m edgeship`
    main()
