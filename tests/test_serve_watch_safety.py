"""`serve --watch`: no file can stop the watcher (a non-UTF-8 name, a FIFO, a symlink, a huge
file), and a watcher that stops for good is reported and stops the service (exit 1)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import EDGE_CLASS_NAMES
from tests.support.procs import one_error_line
from tests.support.serving import start_server

WAIT_S = 30


def _png(path: Path | bytes, level: int) -> None:
    with open(path, "wb") as out:
        Image.fromarray(np.full((28, 28), level, np.uint8)).save(out, format="PNG")


def _lines(results: Path, n: int) -> list[dict]:
    """The first `n` result lines, waiting for them."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        lines = [json.loads(x) for x in results.read_text(encoding="utf-8").splitlines()]
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{n} result lines expected, got: {results.read_text()}")


@pytest.fixture(scope="module")
def watching(edge_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("watch_safety")
    watch, results = tmp / "incoming", tmp / "results.jsonl"
    watch.mkdir()
    served = start_server(
        [edge_models["mlp_int8"], "--watch", watch, "--results", results, "--max-upload-mb", "1"],
        tmp,
    )
    served.watch, served.results, served.outside = watch, results, tmp
    yield served
    assert served.stop() == 0, served.log.read_text()
    assert "Traceback" not in served.log.read_text()


def _then_a_good_file(served, name: str, n: int) -> dict:
    """Drop a good image after the odd one: it is still classified (result line n)."""
    _png(served.watch / name, 200)
    line = _lines(served.results, n)[n - 1]
    assert Path(line["image"]).name == name and line["label"] in EDGE_CLASS_NAMES, line
    return line


def test_odd_files_become_error_lines_and_the_next_file_is_classified(watching):
    outside = watching.outside
    # 1. A name that is not UTF-8 (a camera writing Latin-1): classified, shown escaped.
    _png(os.fsencode(watching.watch) + b"/caf\xe9.png", 90)
    first = _lines(watching.results, 1)[0]
    assert first["image"].endswith("caf\\xe9.png") and first["label"] in EDGE_CLASS_NAMES
    _then_a_good_file(watching, "ok1.png", 2)
    status, recent = watching.json("GET", "/v1/recent")
    assert status == 200
    assert [p["image"] for p in recent["predictions"]][:2] == ["ok1.png", "caf\\xe9.png"]
    # 2. A FIFO moved in: not opened for a blocking read, refused.
    fifo = outside / "pipe.png"
    os.mkfifo(fifo)
    fifo.rename(watching.watch / "pipe.png")
    line = _lines(watching.results, 3)[2]
    assert line["image"].endswith("pipe.png") and "FIFO" in line["error"], line
    _then_a_good_file(watching, "ok2.png", 4)
    # 3. A symlink moved in, to an image outside the folder: not followed.
    secret = outside / "secret.png"
    _png(secret, 30)
    link = outside / "link.png"
    link.symlink_to(secret)
    link.rename(watching.watch / "link.png")
    line = _lines(watching.results, 5)[4]
    assert line["image"].endswith("link.png") and "symbolic link" in line["error"], line
    _then_a_good_file(watching, "ok3.png", 6)
    # 4. A sparse 600 MB file: refused by its size (--max-upload-mb 1), never read.
    with open(watching.watch / "huge.png", "wb") as out:
        out.truncate(600 * 1024 * 1024)
    line = _lines(watching.results, 7)[6]
    assert "--max-upload-mb" in line["error"], line
    _then_a_good_file(watching, "ok4.png", 8)
    status, health = watching.json("GET", "/healthz")
    assert status == 200 and health["watch"] == "ok"


def test_results_through_a_symlink_is_refused(edge_models, tmp_path):
    watch = tmp_path / "incoming"
    watch.mkdir()
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    link = tmp_path / "results.jsonl"
    link.symlink_to(target)
    line = one_error_line(
        "edge_runtime",
        ["serve", "--port", "0", edge_models["mlp_int8"], "--watch", watch, "--results", link],
    )
    assert "--results" in line and "symlink" in line, line


def test_a_watcher_that_stops_is_reported_and_ends_the_service(edge_models, tmp_path):
    """The watched folder removed: /healthz says `watch: failed` (503), and the server process
    exits 1 with one error line, so systemd's Restart= starts it again."""
    from edge_runtime.serve.server import ServeOptions, Service, health, load_models

    watch = tmp_path / "incoming"
    watch.mkdir()
    options = ServeOptions(models=(edge_models["mlp_int8"],), watch=watch)
    service = Service(options, load_models(options))
    stopped = []
    service.on_watch_failure = lambda: stopped.append(True)
    service.start_watch()
    try:
        assert health(service)["watch"] == "ok"
        watch.rmdir()
        deadline = time.monotonic() + WAIT_S
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        state = health(service)
        assert stopped and state["watch"] == "failed" and state["status"] == "failed"
    finally:
        service.stop_watch()

    watch.mkdir()
    served = start_server([edge_models["mlp_int8"], "--watch", watch], tmp_path)
    watch.rmdir()
    try:
        code = served.proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        served.stop()
        raise
    log = served.log.read_text()
    assert code == 1 and "error: --watch stopped" in log and "Traceback" not in log, log


def test_watched_files_are_read_without_following_or_blocking(tmp_path):
    """`read_watched_file` alone: a regular file is read whole; the rest are refused."""
    from edge_runtime.serve.watch import WatchedFileError, read_watched_file

    good = tmp_path / "a.png"
    good.write_bytes(b"x" * 1000)
    assert read_watched_file(good, 1000) == b"x" * 1000
    with pytest.raises(WatchedFileError, match="over the limit"):
        read_watched_file(good, 999)
    os.mkfifo(tmp_path / "f.png")
    with pytest.raises(WatchedFileError, match="FIFO"):
        read_watched_file(tmp_path / "f.png", 1000)
    (tmp_path / "l.png").symlink_to(good)
    with pytest.raises(WatchedFileError, match="symbolic link"):
        read_watched_file(tmp_path / "l.png", 1000)
    with pytest.raises(WatchedFileError, match="not a regular file"):
        read_watched_file("/dev/null", 1000)
