"""What slow or stalled clients cost `serve`: its RSS under stalled uploads, how long it holds a
connection that never finishes its headers, and whether /healthz still answers.

    python -m studies.serve_stall MODEL.tflite [--uploads 20] [--mb 9] [--hold 5] [--json]
        [-- SERVE OPTIONS...]

Starts `python -m edge_runtime serve MODEL` on 127.0.0.1 (from the current folder's code),
reads its VmRSS from /proc/PID/status, opens `--uploads` connections that each send `--mb`
MiB of an image 1 KiB longer, then stall, waits `--hold` s and reads VmRSS again (its
peak, VmHWM, too), asks /healthz, then opens one connection that sends half its headers and
times how long the server keeps it open (at most 30 s). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from tests.support.serving import start_server

HALF_HEADER_WAIT_S = 30.0


def _rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of `pid`, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def _stall(port: int, n: int, mib: float) -> list[socket.socket]:
    """`n` uploads that send `mib` MiB of an image 1 KiB longer, then nothing."""
    chunk = b"\0" * int(mib * 1024 * 1024)
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(chunk) + 1024)
        )
        with contextlib.suppress(OSError):  # refused and closed (503): an answer too
            sock.sendall(chunk)
        socks.append(sock)
    return socks


def _answers(socks: list[socket.socket]) -> dict[str, int]:
    """How each stalled upload ended so far: its status line, or `open` (no answer yet)."""
    out: dict[str, int] = {}
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(200)
            key = data.split(b"\r\n")[0].decode() if data else "closed"
        except BlockingIOError:
            key = "open"
        except OSError:
            key = "reset"
        out[key] = out.get(key, 0) + 1
    return out


def _half_header_held_s(port: int) -> float:
    """Seconds the server keeps a connection that sent half its headers (cap 30)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HALF_HEADER_WAIT_S)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    with contextlib.suppress(TimeoutError, OSError):
        sock.recv(100)
    sock.close()
    return round(time.monotonic() - started, 1)


def measure(model: Path, uploads: int, mib: float, hold: float, extra: list[str]) -> dict:
    """Start the server, stall `uploads` uploads of `mib` MiB, measure; stop it."""
    with tempfile.TemporaryDirectory() as tmp:
        served = start_server([Path(model).resolve(), *extra], Path(tmp))
        proc, port = served.proc, served.port
        try:
            idle = _rss_mb(proc.pid)
            socks = _stall(port, uploads, mib)
            time.sleep(hold)
            stalled = _rss_mb(proc.pid)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/healthz")
                health = conn.getresponse().status
            except OSError as err:
                health = f"{type(err).__name__}"
            finally:
                conn.close()
            answers = _answers(socks)
            for sock in socks:
                sock.close()
            held = _half_header_held_s(port)
        finally:
            served.stop()
    return {
        "uploads": uploads,
        "mib_each": mib,
        "hold_s": hold,
        "serve_options": extra,
        "rss_idle_mib": idle["VmRSS"],
        "rss_stalled_mib": stalled["VmRSS"],
        "rss_peak_mib": stalled["VmHWM"],
        "rss_growth_mib": round(stalled["VmRSS"] - idle["VmRSS"], 1),
        "uploads_answered": answers,
        "healthz_during": health,
        "half_header_held_s": held,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the figures (a table, or JSON)."""
    p = argparse.ArgumentParser(prog="python -m studies.serve_stall", description=__doc__)
    p.add_argument("model", type=Path)
    p.add_argument("--uploads", type=int, default=20)
    p.add_argument("--mb", type=float, default=9.0, help="MiB each upload sends before stalling")
    p.add_argument("--hold", type=float, default=5.0, help="seconds stalled before measuring")
    p.add_argument("--json", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # serve's own options
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    result = measure(args.model, args.uploads, args.mb, args.hold, extra)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
