"""The web app's tests: a camera clip, a self-signed TLS pair, a TLS server."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image


def mjpeg_clip(frames: list[np.ndarray], path: Path, repeat: int, size: int = 280) -> Path:
    """A Motion-JPEG file (JPEG frames back to back) of `frames`, each shown `repeat` times."""
    with open(path, "wb") as out:
        for frame in frames:
            img = Image.fromarray(frame).convert("RGB").resize((size, size), Image.NEAREST)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            for _ in range(repeat):
                out.write(buf.getvalue())
    return path


def self_signed_pair(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1/localhost, made with the `openssl` CLI."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_tls_server(args, log_dir: Path):
    """`python -m edge_runtime serve --port 0 ARGS` with TLS; waits for its `on https://` line."""
    from tests.support.serving import start_server

    return start_server(args, log_dir, scheme="https")


class StaticServer:
    """`python -m http.server` on 127.0.0.1 serving a folder: a plain static host (no COOP/COEP,
    no precompressed bytes, no caching headers)."""

    def __init__(self, folder: Path):
        import re
        import sys
        import time

        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + 30
        line = self.proc.stdout.readline()
        match = re.search(r"port (\d+)", line)
        if match is None or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def wait_for(page, expression: str, timeout: float = 30_000, every_ms: int = 100):
    """`page.wait_for_function(expression)` that works under a strict Content-Security-Policy:
    Playwright's own poller compiles the expression in the page (eval, refused without
    'unsafe-eval'); `page.evaluate` goes through DevTools, which the page's CSP does not bind."""
    import time

    deadline = time.monotonic() + timeout / 1000
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:g} ms: {expression}")
        page.wait_for_timeout(every_ms)
