"""The `--camera*` arguments of `serve` and their values for `ServeOptions`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

DEFAULT_CAMERA_FPS = 5.0
MAX_CAMERA_FPS = 60.0
DEFAULT_CAMERA_TIMEOUT_S = 5.0  # no frame for this long: the camera command is restarted
DEFAULT_CAMERA_SAVE_MAX = 100


def add_camera_arguments(p: argparse.ArgumentParser) -> None:
    """`--camera SOURCE` and its options (docs/camera.md)."""
    p.add_argument(
        "--camera",
        default=None,
        metavar="SOURCE",
        help="classify a camera live: auto, rpicam, v4l2:/dev/videoN or cmd:COMMAND (any "
        "command writing MJPEG to stdout); docs/camera.md",
    )
    p.add_argument(
        "--camera-fps",
        type=float,
        default=DEFAULT_CAMERA_FPS,
        metavar="N",
        help=f"classify at most N frames a second (default {DEFAULT_CAMERA_FPS:g}); the others "
        "are read and dropped",
    )
    p.add_argument(
        "--camera-size",
        default=None,
        metavar="WxH",
        help="the camera's frame size (default: the smallest usual size the model needs)",
    )
    p.add_argument(
        "--camera-timeout",
        type=float,
        default=DEFAULT_CAMERA_TIMEOUT_S,
        metavar="S",
        help="restart the camera command after S seconds without a frame "
        f"(default {DEFAULT_CAMERA_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--camera-save",
        default=None,
        metavar="DIR",
        help="keep the classified frames as JPEG files in DIR (off by default: no frame is "
        "written to disk)",
    )
    p.add_argument(
        "--camera-save-max",
        type=int,
        default=DEFAULT_CAMERA_SAVE_MAX,
        metavar="N",
        help=f"with --camera-save: keep the newest N frames (default {DEFAULT_CAMERA_SAVE_MAX})",
    )


def camera_options(args: argparse.Namespace) -> dict[str, Any]:
    """The camera fields of `ServeOptions` from the argparse namespace."""
    from edge_runtime.serve.camera_source import parse_size

    return {
        "camera": args.camera,
        "camera_fps": args.camera_fps,
        "camera_size": parse_size(args.camera_size) if args.camera_size else None,
        "camera_timeout_s": args.camera_timeout,
        "camera_save": Path(args.camera_save) if args.camera_save else None,
        "camera_save_max": args.camera_save_max,
    }
