"""The camera path's speed: `python -m studies.camera_speed MODEL [MODEL ...]`.

For each model and each stream size (640x480 and 1280x720 by default), a clip of Fashion-MNIST
test images scaled to that size (JPEG quality 85) is played at 30 fps, looped, by Debian's ffmpeg
(`-re -f mjpeg ... -c copy -f mjpeg -`) into `python -m edge_runtime serve MODEL --camera cmd:...
--camera-fps 5`, and measured over `--seconds`:

- frame -> answer: from a frame's last byte read to its answer (the events' `frame_latency_ms`
  from /v1/camera/events), p50 and p99;
- the service's CPU: its process's user + system time over the window, in % of one core (the
  camera's own tool, ffmpeg here, rpicam-vid on a Pi, is apart and given apart);
- flat out, in process: the same stream's bytes through the MJPEG splitter and the service's
  per-frame work (`classify_photo`: decode to size, preprocess, invoke), one frame after the
  other with no rate limit: frames classified a second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.support.serving import start_server

SIZES = ((640, 480), (1280, 720))
STREAM_FPS = 30
CAMERA_FPS = 5
CLIP_IMAGES = 30


def clip(size: tuple[int, int], folder: Path) -> Path:
    """An MJPEG file of Fashion-MNIST test images at `size` (one frame each), with a camera
    sensor's grain (Gaussian noise, sigma 4) so the JPEGs weigh what a real camera's do."""
    from PIL import Image

    from edgeship.train.datasets import load_dataset

    images = load_dataset("fashion-mnist").x_test[:CLIP_IMAGES]
    rng = np.random.default_rng(0)
    path = folder / f"clip_{size[0]}x{size[1]}.mjpeg"
    with open(path, "wb") as out:
        for pixels in images:
            img = Image.fromarray(np.asarray(pixels).squeeze()).convert("RGB").resize(size)
            grain = rng.normal(0, 4, (size[1], size[0], 3))
            noisy = np.clip(np.asarray(img, np.float32) + grain, 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(out, "JPEG", quality=85)
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _player(path: Path) -> str:
    return (
        f"{shutil.which('ffmpeg')} -hide_banner -loglevel error -re -f mjpeg -framerate "
        f"{STREAM_FPS} -stream_loop -1 -i {shlex.quote(str(path))} -c copy -f mjpeg -"
    )


def _events(port: int, latencies: list[float], stop: threading.Event) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/camera/events")
    resp = conn.getresponse()
    while not stop.is_set():
        line = resp.fp.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            latencies.append(json.loads(line[6:])["frame_latency_ms"])
    conn.close()


def _children(pid: int) -> list[int]:
    """The process's descendants (a child started by any of its threads)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(x) for x in task.read_text().split()]
        except OSError:
            continue
    return kids + [g for k in kids for g in _children(k)]


def service_run(model: Path, path: Path, seconds: float, warmup: float = 3.0) -> dict:
    """The service on the looped clip at --camera-fps 5: latency percentiles and CPU use."""
    with tempfile.TemporaryDirectory() as tmp:
        camera = ["--camera", "cmd:" + _player(path), "--camera-fps", str(CAMERA_FPS)]
        served = start_server([Path(model).resolve(), *camera], Path(tmp))
        proc, port = served.proc, served.port
        try:
            latencies: list[float] = []
            stop = threading.Event()
            reader = threading.Thread(target=_events, args=(port, latencies, stop), daemon=True)
            reader.start()
            time.sleep(warmup)
            kids = _children(proc.pid)
            t0, c0 = time.monotonic(), _cpu_s(proc.pid)
            k0 = sum(_cpu_s(k) for k in kids)
            n0 = len(latencies)
            time.sleep(seconds)
            wall = time.monotonic() - t0
            cpu = _cpu_s(proc.pid) - c0
            source_cpu = sum(_cpu_s(k) for k in kids) - k0
            window = latencies[n0:]
            stop.set()
        finally:
            served.stop()
    if not window:
        raise SystemExit(f"no frame classified in {seconds} s with {model}")
    return {
        "frame_to_answer_ms": {
            "p50": round(float(np.percentile(window, 50)), 2),
            "p99": round(float(np.percentile(window, 99)), 2),
        },
        "classified_per_s": round(len(window) / wall, 2),
        "service_cpu_pct": round(100 * cpu / wall, 1),
        "source_cpu_pct": round(100 * source_cpu / wall, 1),
    }


def flat_out(model: Path, path: Path, seconds: float = 3.0) -> float:
    """Frames a second through the splitter and classify_photo, one after the other."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.image.stages import classify_photo
    from edge_runtime.serve.mjpeg import MjpegSplitter

    clf = EdgeClassifier.load(model)
    data = path.read_bytes()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        splitter = MjpegSplitter(16 << 20)
        for at in range(0, len(data), 64 * 1024):
            for frame in splitter.feed(data[at : at + 64 * 1024]):
                classify_photo(clf, frame)
                done += 1
    return round(done / (time.perf_counter() - started), 1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (or JSON)."""
    p = argparse.ArgumentParser(
        prog="python -m studies.camera_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="+", type=Path, help=".tflite models (e.g. the MLP and CNN)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window per run")
    p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    args = p.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        raise SystemExit("error: the benchmark plays its stream with ffmpeg: apt install ffmpeg")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = {size: clip(size, Path(tmp)) for size in SIZES}
        for model in args.models:
            for size, path in clips.items():
                row = {
                    "model": str(model),
                    "size": f"{size[0]}x{size[1]}",
                    "frame_kb": round(path.stat().st_size / CLIP_IMAGES / 1024, 1),
                    **service_run(model, path, args.seconds),
                    "flat_out_fps": flat_out(model, path),
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine,
                    "stream_fps": STREAM_FPS,
                    "camera_fps": CAMERA_FPS,
                    "rows": rows,
                }
            )
        )
        return 0
    print(f"{machine}; {STREAM_FPS} fps MJPEG stream, serve --camera-fps {CAMERA_FPS}\n")
    print(
        "| model | stream | frame | frame→answer p50 | p99 | service CPU | ffmpeg CPU | flat out |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lat = r["frame_to_answer_ms"]
        print(
            f"| {Path(r['model']).parent.name}/{Path(r['model']).name} | {r['size']} "
            f"| {r['frame_kb']} kB | {lat['p50']} ms | {lat['p99']} ms "
            f"| {r['service_cpu_pct']} % | {r['source_cpu_pct']} % "
            f"| {r['flat_out_fps']} frames/s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
