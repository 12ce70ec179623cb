"""`python -m edge_runtime serve` as a real process on 127.0.0.1 for the tests, and HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import REPO, terminate

STARTUP_S = 60.0


@dataclass
class Served:
    """One running server: its process, port and the stderr it wrote so far (in a file)."""

    proc: subprocess.Popen
    port: int
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: bytes | None = None, **headers: str):
        """(status, parsed JSON body)."""
        status, head, data = self.request(method, path, body, headers)
        assert head.get("content-type", "").startswith("application/json"), (status, data)
        return status, json.loads(data)

    def predict(self, image: bytes, query: str = "", content_type: str = "image/png", **headers):
        return self.json(
            "POST", f"/v1/predict{query}", image, **{"Content-Type": content_type, **headers}
        )

    def metrics(self) -> str:
        status, _, data = self.request("GET", "/metrics")
        assert status == 200
        return data.decode()

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL after 30 s, which the tests then see)."""
        return terminate(self.proc, 30)


def start_server(
    args: Sequence[str | os.PathLike],
    log_dir: Path,
    env=None,
    nofile: int | None = None,
    scheme: str = "http",
) -> Served:
    """Start `python -m edge_runtime serve --port 0 ARGS`; wait for its `serving ... on` line.
    `nofile`: the server's open-file limit (`ulimit -n`); `scheme`: https with --tls-cert."""
    log = log_dir / f"serve-{uuid.uuid4().hex[:8]}.log"

    def limit_files() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime", "serve", "--port", "0", *map(str, args)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            preexec_fn=limit_files if nofile else None,
        )
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("serving ") and f" on {scheme}://127.0.0.1:" in line:
                port = int(line.split(f"{scheme}://127.0.0.1:")[1].split()[0])
                return Served(proc, port, log)
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {text[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError(f"serve did not start in {STARTUP_S} s: {log.read_text()[-2000:]}")


def multipart(field: str, filename: str, data: bytes, content_type: str = "image/png"):
    """(body, Content-Type header) of a multipart/form-data upload with one file field."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"
