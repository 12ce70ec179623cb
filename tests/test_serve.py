"""`python -m edge_runtime serve`: a real server process on 127.0.0.1, real HTTP requests."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EDGE_CLASS_NAMES
from tests.support.procs import REPO, one_error_line
from tests.support.serving import multipart, start_server


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _images(folder: Path, n: int, shape: tuple[int, ...], seed: int) -> list[Path]:
    """PNG files of varied brightness (the tiny models' classes are brightness deciles)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        level = 10 + 24 * (i % 10)
        arr = np.clip(level + rng.normal(0, 15, size=shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{seed}_{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def _cli_predictions(model: Path, images: list[Path], top_k: int = 3) -> dict[str, dict]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "predict",
            "--json",
            "--top-k",
            str(top_k),
            str(model),
            *map(str, images),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return {Path(r["image"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of `name` with exactly these labels (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{want}}}" if labels else name) + r" (\S+)$"
    for line in text.splitlines():
        found = re.match(pattern, line)
        if found:
            return float(found.group(1))
    return 0.0


@pytest.fixture(scope="module")
def server(edge_models, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("serve")
    served = start_server(
        [edge_models["mlp_int8"], edge_models["cnn_uint8"], "--max-upload-mb", "1"], log_dir
    )
    yield served
    assert served.stop() == 0, served.log.read_text()


def test_concurrent_predictions_equal_the_cli(server, edge_models, tmp_path):
    gray = _images(tmp_path, 10, (28, 28), seed=1)
    rgb = _images(tmp_path, 6, (32, 32, 3), seed=2)
    want = {
        "mlp_int8": _cli_predictions(edge_models["mlp_int8"], gray),
        "cnn_uint8": _cli_predictions(edge_models["cnn_uint8"], rgb),
    }
    # Not one constant answer (the tiny MLP's is nearly uniform; the CNN's scores move).
    assert len({r["confidence"] for r in want["cnn_uint8"].values()}) > 3
    jobs = [("mlp_int8", p) for p in gray] * 3 + [("cnn_uint8", p) for p in rgb] * 3

    def ask(job_number: int):
        model, path = jobs[job_number]
        data = path.read_bytes()
        query = f"?model={model}&top_k=3"
        if job_number % 2:  # half as the body, half as a multipart upload
            body, ctype = multipart("image", path.name, data)
            return model, path, server.predict(body, query, content_type=ctype)
        return model, path, server.predict(data, query)

    before = server.metrics()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(jobs))))
    for model, path, (status, got) in answers:
        assert status == 200, got
        cli = want[model][path.name]
        assert got["model"] == model
        for key in ("index", "label", "confidence", "top_k"):
            assert got[key] == cli[key], (model, path.name, key, got, cli)
        assert got["latency_us"] > 0
    after = server.metrics()
    counted = sum(
        _metric(after, "edgeship_predictions_total", model=m, label=lab, source="http")
        - _metric(before, "edgeship_predictions_total", model=m, label=lab, source="http")
        for m in want
        for lab in [*EDGE_CLASS_NAMES, *map(str, range(10))]
    )
    assert counted == len(jobs)
    assert _metric(after, "edgeship_predict_latency_seconds_count", model="cnn_uint8") >= 18


def test_models_and_health(server, edge_models):
    status, health = server.json("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"
    assert health["models"] == ["mlp_int8", "cnn_uint8"] and health["token_required"] is False
    status, info = server.json("GET", "/v1/models")
    assert status == 200 and info["default"] == "mlp_int8"
    mlp, cnn = info["models"]
    assert mlp["classes"] == EDGE_CLASS_NAMES and mlp["quantization"] == "int8"
    assert mlp["input"]["shape"] == [28, 28, 1] and mlp["backend"].startswith("ai_edge_litert")
    assert cnn["classes"] == [str(i) for i in range(10)] and cnn["input"]["shape"] == [32, 32, 3]
    status, head, page = server.request("GET", "/")
    assert status == 200 and head["content-type"].startswith("text/html")
    assert b'capture="environment"' in page
    assert not re.search(rb'(src|href)="(https?:)?//', page)  # nothing from elsewhere


def _raw(port: int, head: bytes, chunks=(), read_first: bool = False) -> tuple[int, dict]:
    """Send a request by hand (so the body can lie or stream); return (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        if not read_first:
            for chunk in chunks:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the server answered and closed: read its answer
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected_len(data):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    head_text, _, body = data.partition(b"\r\n\r\n")
    status = int(head_text.split()[1])
    return status, json.loads(body[: _expected_len(data) - len(head_text) - 4] or b"{}")


def _expected_len(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return 1 << 30
    found = re.search(rb"content-length: *(\d+)", head, re.I)
    return len(head) + 4 + int(found.group(1)) if found else 1 << 30


def test_bad_requests_get_their_status_and_the_server_stays_healthy(server, tmp_path):
    before = server.metrics()
    status, got = server.predict(b"certainly not a png")
    assert status == 400 and "not an image" in got["error"]
    truncated = _png(np.full((28, 28), 200, np.uint8))[:40]
    status, got = server.predict(truncated)
    assert status == 400 and got["error"]
    status, got = server.predict(b"hello", content_type="text/plain")
    assert status == 415 and "image/*" in got["error"]
    status, got = server.predict(_png(np.zeros((28, 28), np.uint8)), "?model=nope")
    assert status == 404 and "mlp_int8" in got["error"]
    status, got = server.predict(_png(np.zeros((28, 28), np.uint8)), "?top_k=0")
    assert status == 400 and "top_k" in got["error"]
    body, ctype = multipart("photo", "x.png", _png(np.zeros((28, 28), np.uint8)))
    status, got = server.predict(body, content_type=ctype)
    assert status == 400 and "'image'" in got["error"]
    # Over --max-upload-mb (1 MB here): announced by Content-Length, refused before any body
    # byte is sent; streamed (chunked, no length), refused once the limit is passed.
    status, got = _raw(
        server.port,
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Content-Length: 50000000\r\n\r\n",
        read_first=True,
    )
    assert status == 413 and "1 MB" in got["error"]
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"\0" * 256 * 1024)
    status, got = _raw(
        server.port,
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        chunks=[chunk] * 6,
    )
    assert status == 413
    status, got = server.json("GET", "/no/such/page")
    assert status == 404 and got["error"]
    # Still healthy, still right.
    assert server.json("GET", "/healthz")[0] == 200
    status, got = server.predict(_png(np.full((28, 28), 250, np.uint8)))
    assert status == 200 and got["label"] in EDGE_CLASS_NAMES
    after = server.metrics()
    for kind, n in [
        ("bad_image", 2),
        ("unsupported_type", 1),
        ("unknown_model", 1),
        ("bad_request", 2),
        ("too_large", 2),
        ("not_found", 1),
    ]:
        got_n = _metric(after, "edgeship_errors_total", kind=kind)
        assert got_n - _metric(before, "edgeship_errors_total", kind=kind) == n, (kind, after)
    assert _metric(after, "edgeship_uptime_seconds") > 0
    assert "# TYPE edgeship_predict_latency_seconds histogram" in after


@pytest.mark.parametrize("how", ["--token", "--token-file"])
def test_token_guards_posts_only(edge_models, tmp_path, how):
    if how == "--token-file":  # the token stays out of `ps`: the command line names a file
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        token_file.chmod(0o600)
        served = start_server([edge_models["mlp_int8"], how, token_file], tmp_path)
    else:
        served = start_server([edge_models["mlp_int8"], how, "s3cret"], tmp_path)
    try:
        image = _png(np.full((28, 28), 128, np.uint8))
        status, got = served.predict(image)
        assert status == 401 and "Bearer" in got["error"]
        status, got = served.predict(image, Authorization="Bearer wrong")
        assert status == 401
        status, got = served.predict(image, Authorization="Bearer s3cret")
        assert status == 200 and got["label"] in EDGE_CLASS_NAMES
        status, health = served.json("GET", "/healthz")
        assert status == 200 and health["token_required"] is True
        assert _metric(served.metrics(), "edgeship_errors_total", kind="unauthorized") == 2
    finally:
        assert served.stop() == 0


def test_labels_file_names_the_classes(edge_models, tmp_path):
    names = [f"thing {i}" for i in range(10)]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    served = start_server([edge_models["cnn_uint8"], "--labels", labels], tmp_path)
    try:
        status, info = served.json("GET", "/v1/models")
        assert info["models"][0]["classes"] == names
        status, got = served.predict(_png(np.full((32, 32, 3), 90, np.uint8)), "?top_k=2")
        assert status == 200 and got["label"] == names[got["index"]]
        assert [e["label"] for e in got["top_k"]] == [names[e["index"]] for e in got["top_k"]]
    finally:
        assert served.stop() == 0


def test_sigterm_finishes_the_request_in_flight_and_exits_0(edge_models, tmp_path):
    served = start_server([edge_models["mlp_int8"]], tmp_path)
    image = _png(np.full((28, 28), 30, np.uint8))
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(image) + image[:20]
        )
        # The request is in flight (half its body sent) when the stop comes.
        status, _ = served.json("GET", "/healthz")
        assert status == 200
        served.proc.send_signal(15)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # new connections are refused once it stops
            try:
                socket.create_connection(("127.0.0.1", served.port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("still accepting new connections 10 s after SIGTERM")
        assert served.proc.poll() is None  # still finishing ours
        sock.sendall(image[20:])
        data = b""
        while len(data) < _expected_len(data):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["label"] in EDGE_CLASS_NAMES
    assert served.proc.wait(timeout=30) == 0, served.log.read_text()


def test_watch_classifies_complete_files_once(edge_models, tmp_path):
    watch, results = tmp_path / "incoming", tmp_path / "results.jsonl"
    watch.mkdir()
    served = start_server(
        [edge_models["mlp_int8"], "--watch", watch, "--results", results], tmp_path
    )
    try:
        slow, renamed = _images(tmp_path, 2, (28, 28), seed=5)
        cli = _cli_predictions(edge_models["mlp_int8"], [slow, renamed])
        data = slow.read_bytes()
        # Written slowly: half, a pause, the rest. Never classified half-way.
        with open(watch / slow.name, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            time.sleep(1.0)
            assert not results.read_text().strip()  # nothing yet: the file is still open
            out.write(data[len(data) // 2 :])
        # Written under a hidden name, then renamed into place (rpicam-still -o x.part; mv).
        hidden = watch / f".{renamed.name}.part"
        hidden.write_bytes(renamed.read_bytes())
        hidden.rename(watch / renamed.name)
        (watch / "notes.txt").write_text("not an image")
        (watch / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        lines: list[dict] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(lines) < 3:
            lines = [json.loads(x) for x in results.read_text().splitlines()]
            time.sleep(0.05)
        by_name = {Path(x["image"]).name: x for x in lines}
        assert sorted(by_name) == ["broken.png", slow.name, renamed.name], lines
        for name in (slow.name, renamed.name):
            for key in ("index", "label", "confidence", "top_k"):
                assert by_name[name][key] == cli[name][key]
        assert "error" in by_name["broken.png"]
        status, recent = served.json("GET", "/v1/recent")
        assert {p["image"] for p in recent["predictions"] if p["source"] == "watch"} == {
            slow.name,
            renamed.name,
        }
        text = served.metrics()
        assert _metric(text, "edgeship_errors_total", kind="watch_bad_image") == 1
    finally:
        assert served.stop() == 0
    assert len(results.read_text().splitlines()) == 3  # each file once


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "not found"),
        (["{model}", "--labels", "{labels3}"], "3 class names for a model with 10 outputs"),
        (["{model}", "--results", "{tmp}/r.jsonl"], "--results goes with --watch"),
        (["{model}", "--watch", "{tmp}/nope"], "--watch"),
        (["{model}", "--max-upload-mb", "0"], "--max-upload-mb"),
        (["{model}", "--threads", "0"], "--threads must be at least 1"),
        (["{model}", "--port", "70000"], "--port must be in 0..65535"),
        (["{model}", "--port", "{busy}"], "Cannot listen"),
        (["{model}", "--token-file", "{tmp}/nope"], "Cannot read the token file"),
        (["{model}", "--token-file", "{empty}"], "it is empty"),
        (["{model}", "--token", "t", "--token-file", "{empty}"], "not both"),
    ],
)
def test_startup_errors_are_one_line_exit_2(edge_models, tmp_path, args, needle):
    labels3 = tmp_path / "labels3.txt"
    labels3.write_text("a\nb\nc\n")
    (tmp_path / "empty").write_text("\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        values = {
            "missing": tmp_path / "missing.tflite",
            "model": edge_models["mlp_int8"],
            "labels3": labels3,
            "tmp": tmp_path,
            "busy": busy.getsockname()[1],
            "empty": tmp_path / "empty",
        }
        argv = ["serve", "--port", "0", *(a.format(**values) for a in args)]
        line = one_error_line("edge_runtime", argv)
    assert line.startswith("error: ") and needle in line, line


def test_exposure_warning_without_token():
    from edge_runtime.serve.server import ServeOptions, exposure_warning

    lan = ServeOptions(models=(Path("m.tflite"),), host="0.0.0.0")
    assert "--token" in exposure_warning(lan)
    assert exposure_warning(ServeOptions(models=(Path("m.tflite"),))) is None
    assert (
        exposure_warning(ServeOptions(models=(Path("m.tflite"),), host="0.0.0.0", token="t"))
        is None
    )


def test_listening_socket_is_tcp_so_responses_are_not_nagled():
    """asyncio turns on TCP_NODELAY only for sockets whose proto is IPPROTO_TCP; without it a
    keep-alive client waited ~40 ms per answer (Nagle + delayed ACK)."""
    from edge_runtime.serve.startup import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_load_benchmark_runs_bounded_and_checks_every_answer(edge_models):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "studies.serve_load",
            str(edge_models["cnn_uint8"]),
            "--synthetic",
            "--images",
            "5",
            "--clients",
            "3",
            "--requests",
            "10",
            "--rate",
            "200",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["server_exit_code"] == 0
    for phase in ("http_one_client", "http_load", "http_paced"):
        assert result[phase]["wrong_count"] == 0 and result[phase]["requests"] > 0
    assert result["http_load"]["requests"] == 30 and result["http_paced"]["rate"] == 200
    assert result["in_process_us"]["p50"] > 0
