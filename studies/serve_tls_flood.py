"""`python -m studies.serve_tls_flood MODEL.tflite CERT KEY [--plain]`: sockets that never
send a TLS ClientHello against `serve --tls-cert` under `ulimit -n 100`.

Starts the service (its open-file limit 100), opens 120 TCP connections that send nothing,
waits 1 s, counts the server's open descriptors (/proc/PID/fd), then times GET /healthz over
https (over http with --plain), and prints one JSON line. docs/serve.md quotes it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

from tests.support.serving import start_server

SOCKETS, NOFILE = 120, 100


def main(argv: list[str] | None = None) -> int:
    """Run the flood once; one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m studies.serve_tls_flood")
    parser.add_argument("model")
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("--plain", action="store_true", help="no TLS: the same flood over http")
    args = parser.parse_args(argv)

    tls = (
        []
        if args.plain
        else ["--tls-cert", Path(args.cert).resolve(), "--tls-key", Path(args.key).resolve()]
    )
    with tempfile.TemporaryDirectory() as logs:
        served = start_server(
            [Path(args.model).resolve(), *tls],
            Path(logs),
            nofile=NOFILE,
            scheme="http" if args.plain else "https",
        )
        proc, port = served.proc, served.port
        try:
            socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(SOCKETS)]
            time.sleep(1)
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            started, status = time.monotonic(), None
            while status is None and time.monotonic() - started < 90:
                conn = (
                    http.client.HTTPConnection("127.0.0.1", port, timeout=90)
                    if args.plain
                    else http.client.HTTPSConnection("127.0.0.1", port, timeout=90, context=context)
                )
                try:
                    conn.request("GET", "/healthz")
                    status = conn.getresponse().status
                except OSError:
                    time.sleep(0.2)
                finally:
                    conn.close()
            print(
                json.dumps(
                    {
                        "scheme": "http" if args.plain else "https",
                        "sockets": SOCKETS,
                        "ulimit_n": NOFILE,
                        "server_fds": fds,
                        "healthz_status": status,
                        "healthz_s": round(time.monotonic() - started, 2),
                    }
                )
            )
            for sock in socks:
                sock.close()
        finally:
            served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
