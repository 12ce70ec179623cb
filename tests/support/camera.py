"""Camera stand-ins for the tests: Fashion-MNIST clips as MJPEG, played by Debian's ffmpeg at
real time, and a scripted source that misbehaves on purpose (`python tests/support/camera.py`).

    python tests/support/camera.py PLAN_JSON COUNTER_FILE
        each start of the command plays plan[n] (n: how many starts came before, kept in
        COUNTER_FILE; the last plan repeats); a plan is a list of steps:
        ["frames", JPEG_FILE, N, FPS]   N copies of the JPEG at FPS a second
        ["garbage", N]                  N bytes of noise
        ["truncated", JPEG_FILE]        the first half of the JPEG
        ["oversized", MEGABYTES]        a JPEG header then MEGABYTES of data and no end
        ["hang", SECONDS]               write nothing, stay alive
        ["loop"]                        the steps before it again, forever
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def fashion_test_images(n: int) -> np.ndarray:
    """The first `n` Fashion-MNIST test images (uint8, 28x28)."""
    from edgeship.train.idx import read_idx

    return read_idx(FASHION_TEST)[:n]


def jpeg(pixels: np.ndarray, size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    """One frame as a camera would send it: the image scaled to `size`, as JPEG."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize(size).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_clip(path: Path, frames: list[bytes], repeat: int) -> Path:
    """An MJPEG file: each frame `repeat` times in a row."""
    with open(path, "wb") as out:
        for frame in frames:
            out.write(frame * repeat)
    return path


def ffmpeg_player(clip: Path, fps: float, loop: bool = False) -> str:
    """The shell command that plays `clip` at real time as MJPEG on stdout (Debian's ffmpeg)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg: apt-get install -y ffmpeg")
    return (
        f"{ffmpeg} -hide_banner -loglevel error -re -f mjpeg -framerate {fps:g} "
        + ("-stream_loop -1 " if loop else "")
        + f"-i {shlex.quote(str(clip))} -c copy -f mjpeg -"
    )


def scripted_source(plans: list[list[list]], folder: Path) -> str:
    """The shell command of a source that plays `plans` (see the module's docstring)."""
    plan = folder / "plan.json"
    plan.write_text(json.dumps(plans))
    counter = folder / "starts"
    return f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} {plan} {counter}"


def _play(steps: list[list]) -> None:
    out = sys.stdout.buffer
    rng = np.random.default_rng(0)
    done: list[list] = []
    for step in steps:
        kind = step[0]
        if kind == "loop":
            while True:
                _play(done)
        done.append(step)
        if kind == "frames":
            data = Path(step[1]).read_bytes()
            for _ in range(step[2]):
                out.write(data)
                out.flush()
                time.sleep(1 / step[3])
        elif kind == "garbage":
            noise = rng.integers(0, 256, step[1], dtype=np.uint8).tobytes()
            out.write(noise.replace(b"\xff\xd8", b"\x00\x00"))
        elif kind == "truncated":
            data = Path(step[1]).read_bytes()
            out.write(data[: len(data) // 2])
        elif kind == "oversized":
            out.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            out.write(b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00")
            chunk = b"\x11" * (1 << 20)
            for _ in range(int(step[1])):
                out.write(chunk)
        elif kind == "hang":
            out.flush()
            time.sleep(step[1])
        out.flush()


def main(plan_file: str, counter_file: str) -> None:
    """Play the plan of this start (see the module's docstring)."""
    plans = json.loads(Path(plan_file).read_text())
    counter = Path(counter_file)
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    try:
        _play(plans[min(n, len(plans) - 1)])
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
