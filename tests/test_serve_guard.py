"""`serve` on a LAN: connections and uploads bounded, Host and Origin checked, no 5xx for odd
input, the board read at most every few seconds. A real server process on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EDGE_CLASS_NAMES
from tests.support.procs import REPO, one_error_line
from tests.support.serving import start_server

HEADER_TIMEOUT_S = 1
BODY_TIMEOUT_S = 2
MAX_CONNECTIONS = 8
CLOSED_WITHIN_S = 15  # generous: a closing that takes this long is the bug, not a slow CI


def _png(level: int, shape=(28, 28)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _metric(text: str, kind: str) -> float:
    found = re.search(rf'^edgeship_errors_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def guarded(edge_models, tmp_path_factory):
    """One server with small bounds, an extra Host and Origin, and a fake `vcgencmd` on PATH
    that counts its calls."""
    tmp = tmp_path_factory.mktemp("guard")
    fakebin = tmp / "bin"
    fakebin.mkdir()
    calls = tmp / "vcgencmd.calls"
    tool = fakebin / "vcgencmd"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> '{calls}'\necho throttled=0x50005\n")
    tool.chmod(0o755)
    served = start_server(
        [
            edge_models["mlp_int8"],
            "--max-upload-mb",
            "1",
            "--max-inflight-mb",
            "2",
            "--header-timeout",
            HEADER_TIMEOUT_S,
            "--body-timeout",
            BODY_TIMEOUT_S,
            "--max-connections",
            MAX_CONNECTIONS,
            "--allowed-host",
            "pi.example",
            "--allow-origin",
            "http://app.example",
        ],
        tmp,
        env={**os.environ, "PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}"},
    )
    served.vcgencmd_calls = calls
    yield served
    assert served.stop() == 0, served.log.read_text()
    assert "Traceback" not in served.log.read_text()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _read_response(sock: socket.socket) -> tuple[int | None, bytes]:
    """(status, body) of the answer on `sock`, or (None, b"") when it is closed unanswered."""
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"content-length: *(\d+)", head, re.I)
        if sep and length and len(body) >= int(length.group(1)):
            break
    if not data:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` (which must get no answer)."""
    started = time.monotonic()
    sock.settimeout(CLOSED_WITHIN_S)
    status, _ = _read_response(sock)
    assert status is None
    return time.monotonic() - started


def _post_head(length: int, host: bytes = b"127.0.0.1") -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % (host, length)
    )


def test_half_sent_headers_and_silent_sockets_are_closed(guarded):
    silent = _connect(guarded.port)
    half = _connect(guarded.port)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    kept = _connect(guarded.port)  # a keep-alive connection: one request, then half of one
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _read_response(kept)[0] == 200
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    for sock in (silent, half, kept):
        with sock:
            assert _closed_after(sock) < CLOSED_WITHIN_S
    assert _metric(guarded.metrics(), "header_timeout") >= 3


def test_stalled_uploads_time_out_with_408(guarded):
    socks = [_connect(guarded.port) for _ in range(3)]
    for sock in socks:
        sock.sendall(_post_head(500_000) + b"\x89PNG\r\n\x1a\n")
    for sock in socks:
        with sock:
            status, body = _read_response(sock)
            assert status == 408 and "--body-timeout" in json.loads(body)["error"]
    assert guarded.json("GET", "/healthz")[0] == 200


def test_uploads_in_flight_share_one_budget(guarded):
    """--max-inflight-mb 2: two stalled 0.9 MB uploads fit, a third is refused at once (503);
    once they time out the budget is whole again."""
    part = b"\0" * 900_000
    first = [_connect(guarded.port) for _ in range(2)]
    for sock in first:
        sock.sendall(_post_head(1_000_000) + part)
    time.sleep(0.5)  # the server has read them (loopback)
    with _connect(guarded.port) as third:
        third.sendall(_post_head(1_000_000) + part)
        third.settimeout(BODY_TIMEOUT_S * 0.9)  # its answer comes before any body timeout
        status, body = _read_response(third)
    assert status == 503 and "--max-inflight-mb" in json.loads(body)["error"]
    for sock in first:
        with sock:
            assert _read_response(sock)[0] == 408
    for _ in range(2):  # the budget was given back: two more uploads of that size are read
        status, got = guarded.predict(part)
        assert status == 400 and "image" in got["error"]


def test_past_max_connections_idle_sockets_make_room_and_busy_ones_get_503(guarded):
    before = guarded.metrics()
    idle = [_connect(guarded.port) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        assert guarded.json("GET", "/healthz")[0] == 200  # an idle socket was closed for it
    finally:
        for sock in idle:
            sock.close()
    assert _metric(guarded.metrics(), "evicted") - _metric(before, "evicted") >= 5
    time.sleep(0.3)  # the closed ones are gone server side
    busy = [_connect(guarded.port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in busy:  # mid-upload: not idle, not to be closed for a newcomer
            sock.sendall(_post_head(500_000) + b"\0" * 100)
        time.sleep(0.5)
        status, head, body = guarded.request("GET", "/healthz")
        assert status == 503 and "--max-connections" in json.loads(body)["error"]
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + CLOSED_WITHIN_S
    while time.monotonic() < deadline:
        if guarded.request("GET", "/healthz")[0] == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("still busy after the uploads went away")


def test_the_oldest_idle_connection_is_the_one_evicted(guarded):
    """MAX_CONNECTIONS idle sockets opened one after another, then one more: the first opened
    is the first closed, to make room (the others close later, on their header timeout)."""
    import select

    idle = []
    try:
        for _ in range(MAX_CONNECTIONS):  # accepted in this order: the kernel's queue is FIFO
            idle.append(_connect(guarded.port))
        newcomer = _connect(guarded.port)
        readable, _, _ = select.select(idle, [], [], CLOSED_WITHIN_S)
        first_closed = [idle.index(s) for s in readable]
        newcomer.close()
    finally:
        for sock in idle:
            sock.close()
    assert first_closed and first_closed[0] == 0, first_closed


def test_idle_sockets_past_the_open_file_limit_leave_healthz_answering(edge_models, tmp_path):
    """`ulimit -n 100` and 120 idle sockets: /healthz still answers 200, and the log holds no
    "Too many open files" traceback."""
    served = start_server([edge_models["mlp_int8"]], tmp_path, nofile=100)
    socks = []
    try:
        for _ in range(120):
            socks.append(_connect(served.port))
        status, health = served.json("GET", "/healthz")
        assert status == 200 and health["status"] == "ok"
    finally:
        for sock in socks:
            sock.close()
        assert served.stop() == 0
    log = served.log.read_text()
    assert "Traceback" not in log and log.count("\n") <= 3, log


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 400),
        ("evil.example:{port}", 400),
        ("127.0.0.1.evil.example", 400),
        ("evilpi.example:{port}", 400),  # ends with the --allowed-host name, is not it
        ("pi.example.evil:{port}", 400),
        ("10.0.0.1:{port}", 400),  # an IP this connection did not come to
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST", 200),
        ("[::1]:{port}", 200),
        ("pi.example:{port}", 200),  # --allowed-host
        ("{hostname}.local:{port}", 200),  # the Pi's mDNS name, as a phone on the LAN uses it
        ("{hostname}", 200),
    ],
)
def test_host_header_must_name_this_service(guarded, host, status):
    value = host.format(port=guarded.port, hostname=socket.gethostname())
    for path in ("/healthz", "/v1/models", "/v1/recent"):
        got, head, body = guarded.request("GET", path, headers={"Host": value})
        assert got == status, (value, path, body)
        assert head["content-type"].startswith("application/json")
        if status == 400:
            assert "--allowed-host" in json.loads(body)["error"]


def test_host_may_be_the_address_the_connection_came_to():
    """Bound to 0.0.0.0, a phone types the Pi's IP: allowed, as the connection's own address;
    any other IP or name is not."""
    from edge_runtime.serve.guard import HostOriginGuard, allowed_hosts

    guard = HostOriginGuard(None, allowed_hosts("0.0.0.0"))
    assert guard.host_allowed("192.168.1.20", "192.168.1.20")
    assert guard.host_allowed("[fe80::1]", "fe80::1")
    assert guard.host_allowed("192.168.1.20", "::ffff:192.168.1.20")
    assert not guard.host_allowed("192.168.1.21", "192.168.1.20")
    assert not guard.host_allowed("evil.example", "192.168.1.20")
    # names are matched whole: only a `*.domain` pattern takes subdomains
    named = HostOriginGuard(None, allowed_hosts("0.0.0.0", ["pi.example", "*.lan.example"]))
    assert named.host_allowed("pi.example", None) and named.host_allowed("a.lan.example", None)
    for other in (
        "evilpi.example",
        "x.pi.example",
        "pi.example.evil",
        "evillan.example",
        "lan.example",
        "localhost.evil",
        "evil" + socket.gethostname(),
    ):
        assert not named.host_allowed(other, None), other
    assert "0.0.0.0" not in allowed_hosts("0.0.0.0")
    assert "192.168.1.20" in allowed_hosts("192.168.1.20")
    # The same origin over TLS (serve --tls-cert) is the same origin.
    assert guard.origin_allowed("https://127.0.0.1:8443", "https", "127.0.0.1", 8443)
    assert guard.origin_allowed("https://pi.local", "https", "pi.local", None)
    assert not guard.origin_allowed("http://127.0.0.1:8443", "https", "127.0.0.1", 8443)


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://evil.example", 403),
        ("null", 403),  # a sandboxed frame or a file:// page
        ("http://127.0.0.1:1", 403),  # another port is another origin
        ("https://127.0.0.1:{port}", 403),  # another scheme too
        ("http://app.example", 200),  # --allow-origin
        ("http://app.example/", 200),
        ("http://127.0.0.1:{port}", 200),  # the served page itself
        (None, 200),  # curl, scripts: no Origin
    ],
)
def test_posts_from_foreign_origins_are_refused(guarded, origin, status):
    headers = {} if origin is None else {"Origin": origin.format(port=guarded.port)}
    got, body = guarded.predict(_png(200), **headers)
    assert got == status, body
    if status == 403:
        assert "--allow-origin" in body["error"]
    else:
        assert body["label"] in EDGE_CLASS_NAMES
    # Reading is not a POST: the page's GETs are not refused for their Origin.
    assert guarded.request("GET", "/v1/models", headers=headers)[0] == 200


TOP_K_CORPUS = [
    "²",
    "٣",
    "３",
    "0",
    "-1",
    "11",
    "1e1",
    "",
    " 3",
    "3 ",
    "+3",
    "0x3",
    "3.0",
    "9" * 5000,
    "%00",
    "%FF",
    "1%00",
    "nan",
    "１",
]


def test_top_k_is_parsed_strictly(guarded):
    image = _png(120)
    for raw in TOP_K_CORPUS:
        status, got = guarded.predict(image, f"?top_k={quote(raw, safe='%+')}")
        assert status == 400, (raw, got)
        assert "top_k must be a whole number from 1 to 10" in got["error"]
        assert "\n" not in got["error"] and len(got["error"]) < 200
    for k in (1, 10):
        status, got = guarded.predict(image, f"?top_k={k}")
        assert status == 200 and len(got["top_k"]) == k


def _multipart_raw(filename: bytes, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        b'--%s\r\nContent-Disposition: form-data; name="image"; filename="%s"\r\n'
        b"Content-Type: image/png\r\n\r\n"
        % (boundary.encode(), filename)
        + data
        + b"\r\n--%s--\r\n" % boundary.encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_no_input_gets_a_5xx(guarded):
    """Odd queries, headers and bodies: each gets a 4xx (or 200), never a 5xx; /v1/recent and
    /metrics still answer afterwards, with the odd names printable."""
    png = _png(60)
    latin1_body, latin1_type = _multipart_raw(b"caf\xe9.png", png)
    requests = [  # (query, headers, body)
        ("?model=%FF", {}, png),
        ("?top_k=%C2%B2", {}, png),  # ², a digit to str.isdigit, not to int
        ("?top_k=" + "9" * 5000, {}, png),
        ("?model=%00&top_k=%FF%FE", {}, png),
        ("?model=" + "x" * 4000, {}, png),
        ("?top_k=1&top_k=2&model=mlp_int8&model=x", {}, png),
        ("?%%%=&&==", {}, png),
        ("", {"Content-Type": "image/"}, png),
        ("", {"Content-Type": "multipart/form-data"}, png),
        ("", {"Content-Type": "multipart/form-data; boundary=" + "a" * 2000}, png),
        ("", {"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\n\r\n--x--"),
        ("", {"Content-Type": latin1_type}, latin1_body),
        ("", {"Content-Type": "image/png", "X-Filename": "%FF%FE%00\u00e9"}, png),
        ("", {"Content-Type": "image/png", "Authorization": "Bearer \u00ff"}, png),
        ("", {"Content-Type": "image/png"}, b""),
        ("", {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n" + b"\xff" * 100),
        ("", {"Content-Type": "image/gif"}, b"GIF89a" + b"\0" * 20),
        ("", {"Content-Type": "image/tiff"}, b"II*\0" + b"\xff" * 64),
        ("", {"Content-Type": "image/svg+xml"}, b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
    ]
    for query, headers, body in requests:
        status, head, data = guarded.request("POST", f"/v1/predict{query}", body, headers)
        assert status < 500, (query, headers, status, data)
    raw_requests = [
        _post_head(10)[:-2] + b"Content-Length: 10\r\n\r\n" + b"0" * 10,  # two lengths
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: \xd9\xa3\r\n\r\n",
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET /%FF%00/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\n",  # no Host at all
        b"BREW /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40,  # a TLS hello
    ]
    for raw in raw_requests:
        with _connect(guarded.port) as sock:
            sock.sendall(raw)
            status, data = _read_response(sock)
        assert status is None or status < 500, (raw[:80], status, data)
    status, recent = guarded.json("GET", "/v1/recent")
    assert status == 200
    names = {p["image"] for p in recent["predictions"]}
    assert names & {"caf\u00e9.png", "caf\\xe9.png"}, names
    assert "internal" not in guarded.metrics()


def test_metrics_read_the_board_at_most_every_few_seconds(guarded):
    from edge_runtime.serve.metrics import BOARD_STATE_TTL_S

    def calls() -> list[str]:
        return guarded.vcgencmd_calls.read_text().splitlines()

    guarded.metrics()
    before = len(calls())
    started = time.monotonic()
    for _ in range(15):
        lines = guarded.metrics().splitlines()
        assert "edgeship_throttled_bits 327685" in lines  # the fake vcgencmd's answer
    elapsed = time.monotonic() - started
    assert set(calls()) == {"get_throttled"}
    # One reading per BOARD_STATE_TTL_S at most, not one per scrape.
    assert len(calls()) - before <= 1 + elapsed / BOARD_STATE_TTL_S, (calls(), elapsed)


def test_stall_benchmark_measures_the_bounds(edge_models):
    """`python -m studies.serve_stall` (docs/serve.md's figures), small: the budget refuses
    what passes it and a half-sent header is closed at --header-timeout, not held."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "studies.serve_stall",
            str(edge_models["mlp_int8"]),
            "--uploads",
            "4",
            "--mb",
            "0.9",
            "--hold",
            "0.5",
            "--json",
            "--",
            "--max-upload-mb",
            "1",
            "--max-inflight-mb",
            "2",
            "--header-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["uploads_answered"] == {"open": 2, "HTTP/1.1 503 Service Unavailable": 2}
    assert result["healthz_during"] == 200 and result["half_header_held_s"] < 15
    assert result["rss_stalled_mib"] >= result["rss_idle_mib"] > 0


def test_connection_limit_stays_under_the_open_file_limit():
    """--max-connections is lowered to `ulimit -n` less a reserve (the models, inotify, the
    loop need descriptors too), and kept when the limit is roomy."""
    code = (
        "import resource; from edge_runtime.serve.connections import connection_limit, FD_RESERVE;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (60, 60));"
        "print(connection_limit(64), connection_limit(10), FD_RESERVE)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    low, roomy, reserve = map(int, out)
    assert low == 60 - reserve and roomy == 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (["--header-timeout", "0"], "--header-timeout must be > 0"),
        (["--body-timeout", "-1"], "--body-timeout must be > 0"),
        (["--max-inflight-mb", "0"], "--max-inflight-mb must be > 0"),
    ],
)
def test_bad_bounds_are_one_line_exit_2(edge_models, args, needle):
    line = one_error_line("edge_runtime", ["serve", "--port", "0", edge_models["mlp_int8"], *args])
    assert line.startswith("error: ") and needle in line, line
