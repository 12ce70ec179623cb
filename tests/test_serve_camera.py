"""`serve --camera` with real processes: Debian's ffmpeg playing a Fashion-MNIST clip as MJPEG at
real time (`cmd:`), a stand-in `rpicam-vid` on PATH (`auto`), and a scripted source that sends
garbage, a truncated frame, an oversized one, exits and hangs: each recovers, memory stays
bounded, /healthz tells the truth, the HTTP side answers throughout."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.support.camera import (
    fashion_test_images,
    ffmpeg_player,
    jpeg,
    scripted_source,
    write_clip,
)
from tests.support.procs import one_error_line
from tests.support.serving import start_server

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="apt-get install ffmpeg")
TOKEN = "cam-s3cret"
WAIT_S = 40


def _wait(what, predicate, timeout=WAIT_S, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def _runs(labels: list[str]) -> list[str]:
    """Consecutive repeats collapsed: the clip's images in the order they were seen."""
    return [x for i, x in enumerate(labels) if i == 0 or labels[i - 1] != x]


@pytest.fixture(scope="module")
def model(fashion_runs) -> Path:
    return fashion_runs["mlp"] / "model_int8.tflite"


@pytest.fixture(scope="module")
def distinct(model, tmp_path_factory) -> list[tuple[Path, str]]:
    """Six camera frames (Fashion-MNIST test images as 320x240 JPEG) that the model tells apart,
    each with its label as the upload path (classify_photo) gives it."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.image.stages import classify_photo

    clf = EdgeClassifier.load(model)
    folder = tmp_path_factory.mktemp("frames")
    chosen: dict[str, Path] = {}
    for i, pixels in enumerate(fashion_test_images(200)):
        data = jpeg(pixels)
        label = classify_photo(clf, data)[0].label
        if label not in chosen:
            chosen[label] = folder / f"f{i}.jpg"
            chosen[label].write_bytes(data)
        if len(chosen) == 6:
            break
    assert len(chosen) == 6, chosen
    return [(path, label) for label, path in chosen.items()]


def test_the_clip_is_classified_in_order_everywhere_and_token_protected(model, distinct, tmp_path):
    clip = write_clip(tmp_path / "clip.mjpeg", [p.read_bytes() for p, _ in distinct], repeat=8)
    results, saved = tmp_path / "results.jsonl", tmp_path / "saved"
    saved.mkdir()
    served = start_server(
        [
            model,
            "--camera",
            "cmd:" + ffmpeg_player(clip, 10),
            "--camera-fps",
            "5",
            "--results",
            results,
            "--token",
            TOKEN,
            "--camera-save",
            saved,
            "--camera-save-max",
            "4",
        ],
        tmp_path,
    )
    try:
        want = [label for _, label in distinct]
        # the clip (4.8 s) plays once, ffmpeg exits, the service starts it again
        _wait("the clip twice", lambda: len(_runs([x["label"] for x in _lines(results)])) > 6)
        seen = [x["label"] for x in _lines(results)]
        assert _runs(seen)[:6] == want, seen
        assert all(x["source"] == "camera" for x in _lines(results))
        # /v1/recent: camera rows, the same answers in the same order
        status, body = served.json("GET", "/v1/recent")
        rows = [r for r in body["predictions"] if r["source"] == "camera"][::-1]
        seen = [x["label"] for x in _lines(results)]
        labels = [r["label"] for r in rows]
        assert len(labels) >= 12, body  # the 30 rows kept hold the camera's last answers
        assert any(seen[i : i + len(labels)] == labels for i in range(len(seen))), (labels, seen)
        status, health = served.json("GET", "/healthz")
        assert status == 200 and health["camera_restarts"] >= 1, health
        assert "exited (exit code 0)" in health["camera_last_error"]
        counts = health["camera_frames"]
        assert counts["classified"] >= 12 and counts["dropped"] >= 6 and counts["bad"] == 0
        metrics = served.metrics()
        assert 'edgeship_camera_frames_total{result="classified"} ' in metrics
        assert 'source="camera"' in metrics
        assert "edgeship_camera_frame_latency_seconds_count" in metrics
        # --camera-save: the newest 4 frames, each a JPEG of the camera's size
        files = sorted(saved.glob("camera-*.jpg"))
        assert len(files) == 4, files
        assert Image.open(files[-1]).size == (320, 240)
        # the frame and the events need the token (header or ?token=)
        for path in ("/v1/camera.jpg", "/v1/camera/events", f"/v1/camera.jpg?token=x{TOKEN}"):
            assert served.request("GET", path)[0] == 401, path
        status, head, data = served.request(
            "GET", "/v1/camera.jpg", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert status == 200 and head["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(data)).size == (320, 240)
        event = _first_event(served.port, f"/v1/camera/events?token={TOKEN}")
        assert event["label"] in want and event["seq"] >= 1 and len(event["top_k"]) == 3
        listening = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        listening.request("GET", "/v1/camera/events", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listening.getresponse().status == 200
    finally:  # an open event stream ends with the server: SIGTERM exits 0, not SIGKILL
        assert served.stop() == 0
    assert "Traceback" not in served.log.read_text()


def _first_event(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
        while True:
            line = resp.fp.readline().decode()
            if line.startswith("data: "):
                return json.loads(line[6:])
    finally:
        conn.close()


def test_auto_chooses_rpicam_vid_with_the_models_size(model, distinct, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    clip = write_clip(tmp_path / "clip.mjpeg", [distinct[0][0].read_bytes()], repeat=10)
    stand_in = bin_dir / "rpicam-vid"
    stand_in.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\nexec {ffmpeg_player(clip, 10, loop=True)}\n'
    )
    stand_in.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    served = start_server([model, "--camera", "auto", "--camera-fps", "2"], tmp_path, env=env)
    try:
        health = _wait(
            "a classified frame",
            lambda: (h := served.json("GET", "/healthz")[1])["camera_frames"]["classified"] and h,
        )
        assert health["camera"] == "streaming" and health["camera_source"].startswith("rpicam")
        args = (tmp_path / "args").read_text().split()
        assert args == [
            "-t",
            "0",
            "-n",
            "--codec",
            "mjpeg",
            "--width",
            "320",
            "--height",
            "240",
            "--framerate",
            "2",
            "-o",
            "-",
        ]
        assert served.json("GET", "/v1/recent")[1]["predictions"][0]["label"] == distinct[0][1]
    finally:
        assert served.stop() == 0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_misbehaving_camera_recovers_each_time_with_bounded_memory(model, distinct, tmp_path):
    (a, la), (b, lb), (c, lc), (d, ld), (e, le), (f, lf) = distinct
    plans = [
        [
            ["frames", str(a), 6, 10],
            ["garbage", 200_000],
            ["frames", str(b), 6, 10],
            ["truncated", str(a)],
            ["frames", str(c), 6, 10],
            ["oversized", 100],
            ["frames", str(d), 6, 10],
        ],  # then exits
        [["frames", str(e), 6, 10], ["hang", 60]],
        [["frames", str(f), 1, 10], ["loop"]],
    ]
    results = tmp_path / "results.jsonl"
    served = start_server(
        [
            model,
            "--camera",
            "cmd:" + scripted_source(plans, tmp_path),
            "--camera-fps",
            "5",
            "--camera-timeout",
            "2.5",
            "--max-upload-mb",
            "1",
            "--results",
            results,
        ],
        tmp_path,
    )
    try:
        before = _peak_rss_mb(served.proc.pid)
        states = set()

        def settled():
            status, health = served.json("GET", "/healthz")
            states.add((status, health["camera"]))
            assert served.request("GET", "/v1/models")[0] == 200  # the HTTP side answers
            labels = [x["label"] for x in _lines(results)]
            return labels and labels[-1] == lf and health["camera_restarts"] >= 2 and health

        health = _wait("the third start's frames", settled)
        seen = [x["label"] for x in _lines(results)]
        assert _runs(seen)[:6] == [la, lb, lc, ld, le, lf], (seen, health)
        assert health["camera"] == "streaming" and health["camera_restarts"] == 2, health
        assert health["camera_frames"]["bad"] >= 3  # garbage, truncated, oversized
        assert "no frame for 2.5 s" in health["camera_last_error"]
        assert (200, "restarting") in states, states
        # 100 MB of one "frame" went through; the service held at most ~1 MB of it
        assert _peak_rss_mb(served.proc.pid) - before < 40, (before, _peak_rss_mb(served.proc.pid))
    finally:
        assert served.stop() == 0
    assert "Traceback" not in served.log.read_text()


def test_a_camera_that_keeps_failing_is_reported_and_uploads_still_work(model, distinct, tmp_path):
    served = start_server([model, "--camera", "cmd:false"], tmp_path)
    try:
        status, health = _wait(
            "camera: failed",
            lambda: (r := served.json("GET", "/healthz"))[1]["camera"] == "failed" and r,
        )
        assert status == 503 and health["status"] == "failed"
        assert health["camera_restarts"] >= 4 and "exit code 1" in health["camera_last_error"]
        status, answer = served.predict(distinct[1][0].read_bytes(), content_type="image/jpeg")
        assert status == 200 and answer["label"] == distinct[1][1]
        assert served.request("GET", "/v1/camera.jpg")[0] == 503
    finally:
        assert served.stop() == 0


def test_no_camera_is_one_error_line_and_exit_2(model, tmp_path):
    bare = dict(os.environ, PATH="/usr/bin:/bin")  # no rpicam-vid here, no /dev/video*
    if shutil.which("rpicam-vid", path=bare["PATH"]) or list(Path("/dev").glob("video*")):
        pytest.skip("this machine has a camera")
    cases = {
        "auto": "--camera auto found no camera",
        "rpicam": "--camera rpicam needs rpicam-vid",
        "v4l2:/dev/video7": "No such video device",
        "cmd:no-such-camera-tool -o -": "'no-such-camera-tool' is not found",
        "usb": "--camera is auto, rpicam, v4l2:/dev/videoN or cmd:COMMAND",
    }
    for source, says in cases.items():
        line = one_error_line("edge_runtime", ["serve", model, "--camera", source], env=bare)
        assert says in line and source in line, line
    for args, says in (
        (["--camera", "auto", "--camera-fps", "0"], "--camera-fps must be in (0, 60]"),
        (["--camera", "auto", "--camera-size", "640"], "--camera-size is WIDTHxHEIGHT"),
        (["--camera-save", str(tmp_path)], "--camera-save goes with --camera"),
        (["--camera", "cmd:true", "--camera-save", str(tmp_path / "no")], "--camera-save: not a"),
    ):
        line = one_error_line("edge_runtime", ["serve", model, *args], env=bare)
        assert says in line, line


def test_the_page_follows_the_camera_without_a_reload(model, distinct, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    from tests.test_serve_page import CHROMIUM, CHROMIUM_ARGS

    if shutil.which(CHROMIUM) is None:
        pytest.skip("no /usr/bin/chromium: apt-get install chromium")
    (a, la), (b, lb) = distinct[:2]
    clip = write_clip(tmp_path / "clip.mjpeg", [a.read_bytes(), b.read_bytes()], repeat=10)
    served = start_server(
        [
            model,
            "--camera",
            "cmd:" + ffmpeg_player(clip, 10, loop=True),
            "--camera-fps",
            "4",
            "--token",
            TOKEN,
        ],
        tmp_path,
    )
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.add_init_script(f"localStorage.setItem('edgeshipToken', '{TOKEN}')")
            page.goto(f"http://127.0.0.1:{served.port}/")
            seen = set()
            for _ in range(3):  # a, b, a: the label changes with the clip, no reload
                page.wait_for_function(
                    "([prev]) => { const t = document.getElementById('live-answer').textContent;"
                    " return t !== prev && !t.startsWith('Waiting'); }",
                    arg=[page.inner_text("#live-answer")],
                    timeout=20_000,
                )
                seen.add(page.inner_text("#live-answer"))
            assert seen == {la, lb}, seen
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
            page.wait_for_function("document.getElementById('live').naturalWidth > 0")
            assert page.evaluate("document.getElementById('live').naturalWidth") == 320
            assert len(page.query_selector_all("#live-bars .bar")) == 10
            browser.close()
    finally:
        assert served.stop() == 0
