"""`serve --camera SOURCE`: which command writes the camera's MJPEG to its standard output.

    auto              rpicam-vid when on PATH (a Camera Module), else the first /dev/video*
                      through ffmpeg (a USB webcam); none found: ServeError (exit 2)
    rpicam            rpicam-vid -t 0 -n --codec mjpeg --width W --height H --framerate F -o -
    v4l2:/dev/videoN  ffmpeg -f v4l2 -input_format mjpeg -video_size WxH -i /dev/videoN
                      -c copy -f mjpeg -
    cmd:COMMAND       any shell command writing MJPEG to stdout (EDGESHIP_CAMERA_WIDTH,
                      _HEIGHT and _FPS in its environment)

No camera library in the runtime: the camera stack's own tools do the capture.
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass

from edge_runtime.device.camera_check import video_devices
from edge_runtime.serve.errors import ServeError

# The usual sizes a Camera Module and a UVC webcam both offer, smallest first.
CAMERA_SIZES = ((320, 240), (640, 480), (1280, 720), (1920, 1080))


class CameraError(ServeError):
    """The camera asked for cannot be used: not found, a bad --camera or --camera-size."""


@dataclass(frozen=True)
class CameraCommand:
    """The command to run for the camera, what it is, and the environment it gets."""

    argv: tuple[str, ...]
    kind: str  # rpicam, v4l2 or cmd
    describe: str
    env: tuple[tuple[str, str], ...] = ()


def parse_size(text: str) -> tuple[int, int]:
    """`640x480` -> (640, 480); CameraError unless two positive integers joined by x."""
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isascii() and w.isdigit() and h.isascii() and h.isdigit()):
        raise CameraError(f"--camera-size is WIDTHxHEIGHT, e.g. 640x480. Received: {text}")
    width, height = int(w), int(h)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise CameraError(f"--camera-size must be 16..8192 on each side. Received: {text}")
    return width, height


def default_size(needed: tuple[int, int]) -> tuple[int, int]:
    """The smallest usual camera size covering `needed` (W, H): what the photo path's
    decode-to-size would keep of a bigger frame anyway; the largest if none covers it."""
    for size in CAMERA_SIZES:
        if size[0] >= needed[0] and size[1] >= needed[1]:
            return size
    return CAMERA_SIZES[-1]


def _rpicam(size: tuple[int, int], fps: float) -> CameraCommand:
    exe = shutil.which("rpicam-vid")
    if exe is None:
        raise CameraError(
            "--camera rpicam needs rpicam-vid (sudo apt install rpicam-apps; on Bookworm "
            "and Trixie it is installed with Raspberry Pi OS). Received: --camera rpicam"
        )
    argv = (
        exe,
        "-t",
        "0",
        "-n",
        "--codec",
        "mjpeg",
        "--width",
        str(size[0]),
        "--height",
        str(size[1]),
        "--framerate",
        f"{fps:g}",
        "-o",
        "-",
    )
    return CameraCommand(argv, "rpicam", f"rpicam-vid {size[0]}x{size[1]}")


def _v4l2(device: str, size: tuple[int, int]) -> CameraCommand:
    if not os.path.exists(device):
        found = ", ".join(video_devices()) or "none"
        raise CameraError(
            f"No such video device (found: {found}); plug the webcam in, or pick another. "
            f"Received: --camera v4l2:{device}"
        )
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise CameraError(
            f"--camera v4l2: reads the webcam through ffmpeg: sudo apt install ffmpeg. "
            f"Received: --camera v4l2:{device}"
        )
    argv = (
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "v4l2",
        "-input_format",
        "mjpeg",
        "-video_size",
        f"{size[0]}x{size[1]}",
        "-i",
        device,
        "-c",
        "copy",
        "-f",
        "mjpeg",
        "-",
    )
    return CameraCommand(argv, "v4l2", f"{device} {size[0]}x{size[1]} through ffmpeg")


def _cmd(command: str, size: tuple[int, int], fps: float) -> CameraCommand:
    try:
        words = shlex.split(command)
    except ValueError as err:
        raise CameraError(
            f"--camera cmd: cannot split the command ({err}). Received: --camera cmd:{command}"
        ) from None
    if not words:
        raise CameraError("--camera cmd: needs a command. Received: --camera cmd:")
    if shutil.which(words[0]) is None:
        raise CameraError(
            f"--camera cmd: the command {words[0]!r} is not found on PATH. "
            f"Received: --camera cmd:{command}"
        )
    env = (
        ("EDGESHIP_CAMERA_WIDTH", str(size[0])),
        ("EDGESHIP_CAMERA_HEIGHT", str(size[1])),
        ("EDGESHIP_CAMERA_FPS", f"{fps:g}"),
    )
    return CameraCommand(("/bin/sh", "-c", command), "cmd", f"cmd: {command}", env)


def camera_command(source: str, size: tuple[int, int], fps: float) -> CameraCommand:
    """The command for `--camera SOURCE`; CameraError when it names no usable camera."""
    if source == "auto":
        if shutil.which("rpicam-vid"):
            return _rpicam(size, fps)
        devices = video_devices()
        if devices and shutil.which("ffmpeg"):
            return _v4l2(devices[0], size)
        raise CameraError(
            "--camera auto found no camera: no rpicam-vid on PATH (Camera Module: sudo apt "
            "install rpicam-apps) and "
            + (
                "no /dev/video* (USB webcam: plug it in)"
                if not devices
                else "no ffmpeg to read /dev/video* (sudo apt install ffmpeg)"
            )
            + "; leave --camera out to serve without one. Received: --camera auto"
        )
    if source == "rpicam":
        return _rpicam(size, fps)
    if source.startswith("v4l2:"):
        return _v4l2(source.removeprefix("v4l2:"), size)
    if source.startswith("cmd:"):
        return _cmd(source.removeprefix("cmd:"), size, fps)
    raise CameraError(
        f"--camera is auto, rpicam, v4l2:/dev/videoN or cmd:COMMAND. Received: --camera {source}"
    )
