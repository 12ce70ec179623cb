"""Load benchmark of `python -m edge_runtime serve`: `python -m studies.serve_load MODEL`.

Bounded: it starts the service on 127.0.0.1 (a free port), sends `--clients` concurrent
keep-alive clients x `--requests` requests each of `POST /v1/predict` (PNG bodies of
Fashion-MNIST test images, or of synthetic images with `--synthetic`), then stops the service
and prints:

- in-process: the same images through the same work the service does per request
  (`load_image` + `preprocess_image` + `EdgeClassifier.predict`), one after another;
- HTTP, one client: each request's round trip, one at a time (what one caller sees);
- HTTP, N clients flat out: the top requests per second, and the round trips then (which
  include queueing: with N requests always in flight, p50 >= N / (requests per second));
- HTTP, N clients paced at `--rate` requests per second in all (default 500): the round trips
  a caller sees at that load, next to in-process.

Every answer is checked against the in-process label of its image. The clients are threads
on raw sockets (a prebuilt request, a minimal response reader) so that the measuring side
costs as little as possible of the machine the service shares.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tests.support.serving import start_server


def _percentiles(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {
        "p50": round(float(np.percentile(us, 50)), 1),
        "p99": round(float(np.percentile(us, 99)), 1),
        "mean": round(float(us.mean()), 1),
    }


def _images(n: int, synthetic: bool, data_dir: Path | None) -> list[bytes]:
    from PIL import Image

    if synthetic:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(n)]
    else:
        from edgeship.train.datasets import load_fashion_mnist

        arrays = [img[:, :, 0] for img in load_fashion_mnist(data_dir).x_test[:n]]
    out = []
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def in_process(model: Path, images: list[bytes], rounds: int) -> tuple[list[str], list[float]]:
    """Labels of `images` and per-image seconds of the service's own work, in this process."""
    from edge_runtime.native_log import filtered_native_stderr
    from edge_runtime.serve.options import ServeOptions
    from edge_runtime.serve.service import Service, load_models

    options = ServeOptions(models=(model,))
    with filtered_native_stderr():
        service = Service(options, load_models(options))
    slot = service.models[service.default]
    labels = [service.classify(slot, data, 3)[0]["label"] for data in images]
    times = []
    for _ in range(rounds):
        for data in images:
            started = time.perf_counter()
            service.classify(slot, data, 3)
            times.append(time.perf_counter() - started)
    return labels, times


class _Client:
    """One keep-alive connection sending prebuilt requests."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def roundtrip(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(rest) < length:
            self._recv()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[length:]
        return int(head.split(b" ", 2)[1]), rest[:length]

    def _recv(self) -> None:
        part = self.sock.recv(65536)
        if not part:
            raise ConnectionError("the server closed the connection")
        self.buf += part

    def close(self) -> None:
        self.sock.close()


def _request(data: bytes) -> bytes:
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def http_load(
    port: int,
    images: list[bytes],
    labels: list[str],
    clients: int,
    requests: int,
    rate: float = 0.0,
) -> dict[str, object]:
    """`clients` threads x `requests` requests; wall time, latencies, wrong answers.

    `rate` 0: each client sends its next request as soon as it has the answer (closed loop:
    the service's top speed; the latency then includes waiting behind the other clients).
    `rate` R > 0: the clients together start R requests per second, evenly spaced (each
    client every clients/R s, staggered): the latency a caller sees at that load."""
    prepared = [_request(data) for data in images]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    wrong: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        conn = _Client(port)
        mine = latencies[c]
        try:
            start.wait()
            began = time.perf_counter()
            for r in range(requests):
                i = (c * requests + r) % len(prepared)
                if rate:
                    due = began + (r * clients + c) / rate
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                t0 = time.perf_counter()
                status, body = conn.roundtrip(prepared[i])
                mine.append(time.perf_counter() - t0)
                got = json.loads(body).get("label") if status == 200 else None
                if got != labels[i]:
                    wrong.append(f"image {i}: status {status}, {body[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    flat = [x for per in latencies for x in per]
    return {
        "clients": clients,
        "rate": rate or None,
        "requests": len(flat),
        "seconds": round(wall, 3),
        "requests_per_s": round(len(flat) / wall, 1),
        "latency_us": _percentiles(flat),
        "wrong": wrong[:5],
        "wrong_count": len(wrong),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m studies.serve_load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", type=Path, help="the .tflite model (e.g. RUN/model_int8.tflite)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=250, help="requests per client")
    parser.add_argument("--images", type=int, default=100, help="distinct images sent")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="requests/s of the paced run (all clients)"
    )
    parser.add_argument("--synthetic", action="store_true", help="random images, no dataset")
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.images < 1:
        parser.error("--clients, --requests and --images must be >= 1")
    images = _images(args.images, args.synthetic, args.data_dir)
    labels, local = in_process(args.model, images, rounds=max(1, 1000 // len(images)))
    with tempfile.TemporaryDirectory() as tmp:
        served = start_server([Path(args.model).resolve()], Path(tmp))
        port = served.port
        try:
            http_load(port, images, labels, 1, min(100, args.requests))  # warm-up
            single = http_load(port, images, labels, 1, max(args.requests, 500))
            loaded = http_load(port, images, labels, args.clients, args.requests)
            paced = http_load(port, images, labels, args.clients, args.requests, args.rate)
        finally:
            code = served.stop()
    result = {
        "model": str(args.model),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "in_process_us": _percentiles(local),
        "http_one_client": single,
        "http_load": loaded,
        "http_paced": paced,
        "server_exit_code": code,
    }
    if args.json:
        print(json.dumps(result))
    else:
        lp, sp, hp = result["in_process_us"], single["latency_us"], loaded["latency_us"]
        print(
            f"model {args.model} on {result['machine']} ({result['cpus']} CPUs), "
            f"{len(images)} {'synthetic' if args.synthetic else 'Fashion-MNIST'} PNGs"
        )
        print(f"in-process   decode+predict   p50 {lp['p50']:8.1f} us  p99 {lp['p99']:8.1f} us")
        print(
            f"HTTP 1 client  round trip     p50 {sp['p50']:8.1f} us  p99 {sp['p99']:8.1f} us  "
            f"({sp['p50'] - lp['p50']:+.1f} us p50 over in-process), "
            f"{single['requests_per_s']:.0f} req/s"
        )
        print(
            f"HTTP {args.clients} clients round trip     p50 {hp['p50']:8.1f} us  "
            f"p99 {hp['p99']:8.1f} us  {loaded['requests_per_s']:.0f} req/s "
            f"({loaded['requests']} requests in {loaded['seconds']:.2f} s, flat out)"
        )
        pp = paced["latency_us"]
        print(
            f"HTTP {args.clients} clients at {args.rate:g} req/s  p50 {pp['p50']:8.1f} us  "
            f"p99 {pp['p99']:8.1f} us  ({pp['p50'] - lp['p50']:+.1f} us p50 over in-process), "
            f"{paced['requests_per_s']:.0f} req/s achieved"
        )
    wrong = single["wrong_count"] + loaded["wrong_count"] + paced["wrong_count"]
    if wrong or code != 0:
        print(
            f"error: {wrong} wrong answers {loaded['wrong'] or single['wrong']}, "
            f"server exit {code}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
