"""`serve --tls-cert/--tls-key`: connections counted and timed from accept (the handshake
inside --header-timeout and under --max-connections), the key loaded once (an encrypted one:
one line, or --tls-key-password-file), and secrets' file modes checked. Real server processes
on 127.0.0.1, a real TLS client."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess

import pytest

from tests.support.procs import one_error_line
from tests.support.serving import start_server
from tests.support.webapp import self_signed_pair

ANSWER_WITHIN_S = 20  # asyncio's own handshake timeout is 60 s: past this, it is the bug


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_pair(folder)
    key.chmod(0o600)
    return cert, key


def _https_healthz(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=ANSWER_WITHIN_S, context=context)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_silent_tls_sockets_are_bounded_like_plain_ones(edge_models, pair, tmp_path):
    """`ulimit -n 100`, 120 sockets that never send a ClientHello: /healthz over https answers
    (not after asyncio's 60 s), the idle handshakes were evicted, and a silent socket is closed
    by --header-timeout."""
    cert, key = pair
    served = start_server(
        [edge_models["mlp_int8"], "--tls-cert", cert, "--tls-key", key, "--header-timeout", "3"],
        tmp_path,
        nofile=100,
        scheme="https",
    )
    socks = []
    try:
        for _ in range(120):
            socks.append(socket.create_connection(("127.0.0.1", served.port), timeout=30))
        assert _https_healthz(served.port) == 200
        last = socks[-1]  # accepted last, so never evicted: the header timeout closes it
        last.settimeout(ANSWER_WITHIN_S)
        assert last.recv(1) == b""
    finally:
        for sock in socks:
            sock.close()
        assert served.stop() == 0
    log = served.log.read_text()
    assert "Traceback" not in log, log


def test_encrypted_key_is_one_line_or_loads_with_its_passphrase_file(edge_models, pair, tmp_path):
    cert, key = pair
    locked = tmp_path / "locked.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-out", locked, "-aes256", "-passout", "pass:s3cret"],
        check=True,
        capture_output=True,
    )
    locked.chmod(0o600)
    line = one_error_line(
        "edge_runtime",
        ["serve", edge_models["mlp_int8"], "--port", "0", "--tls-cert", cert, "--tls-key", locked],
    )
    assert "encrypted" in line and "--tls-key-password-file" in line, line
    assert "do not load together" not in line
    (tmp_path / "pass.txt").write_text("s3cret\n")
    (tmp_path / "pass.txt").chmod(0o600)
    served = start_server(
        [
            edge_models["mlp_int8"],
            "--tls-cert",
            cert,
            "--tls-key",
            locked,
            "--tls-key-password-file",
            tmp_path / "pass.txt",
        ],
        tmp_path,
        scheme="https",
    )
    try:
        assert _https_healthz(served.port) == 200
    finally:
        assert served.stop() == 0
    assert "warning" not in served.log.read_text()


def test_secrets_open_to_others_warn_and_strict_refuses(edge_models, pair, tmp_path):
    cert, key = pair
    loose_key, token = tmp_path / "key.pem", tmp_path / "token"
    loose_key.write_bytes(key.read_bytes())
    loose_key.chmod(0o644)
    token.write_text("t0ken\n")
    token.chmod(0o640)
    args = [
        edge_models["mlp_int8"],
        "--tls-cert",
        cert,
        "--tls-key",
        loose_key,
        "--token-file",
        token,
    ]
    served = start_server(args, tmp_path, scheme="https")
    assert served.stop() == 0
    warnings = [ln for ln in served.log.read_text().splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, warnings
    assert "--tls-key" in warnings[0] and "0644" in warnings[0] and "chmod 600" in warnings[0]
    assert "--token-file" in warnings[1] and "0640" in warnings[1]
    line = one_error_line("edge_runtime", ["serve", *args, "--port", "0", "--strict-permissions"])
    assert line.startswith("error: ") and "0644" in line and "--strict-permissions" in line
