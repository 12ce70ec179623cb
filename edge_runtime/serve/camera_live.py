"""The camera's frames classified: at most --camera-fps a second, the rest dropped, never queued.

The reading thread (camera.py) offers every frame; one that comes sooner than 1/fps after the
last one taken is dropped, and a frame taken while the classifier is still busy replaces the
waiting one (the older is dropped). One classifying thread runs each taken frame through the
service's own `classify` (edge_runtime.image.stages.classify_photo: the same decode-to-size and
preprocessing as an upload) with the default model, then: the latest frame and answer for
`/v1/camera.jpg` and `/v1/camera/events`, a `/v1/recent` row (source `camera`), a `--results`
line, the `/metrics` counters, and with `--camera-save DIR` the frame as a file (the newest
`--camera-save-max` kept).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import EdgeshipError
from edge_runtime.records import DEFAULT_TOP_K
from edge_runtime.serve.camera import CameraFeed
from edge_runtime.serve.camera_source import CameraCommand
from edge_runtime.serve.metrics import Histogram

if TYPE_CHECKING:
    from edge_runtime.serve.service import Service

FPS_WINDOW_S = 5.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class CameraLive:
    """The camera of one service: its feed, the frame in hand, the latest answer, counters."""

    def __init__(self, service: Service, command: CameraCommand) -> None:
        options = service.options
        self.service, self.command = service, command
        self.fps = options.camera_fps
        self.counts = {"classified": 0, "dropped": 0, "bad": 0}
        self.latest: tuple[int, bytes, str] | None = None  # (seq, jpeg, event JSON)
        # set by the server: True once it shuts down
        self.stopping: Callable[[], bool] = lambda: False
        self._lock = threading.Condition()
        self._slot: tuple[bytes, float] | None = None
        self._last_taken = float("-inf")
        self._seq = 0
        self._times: deque[float] = deque()
        self._latency = Histogram()
        self._saved: deque[Path] = deque(self._saved_files(options.camera_save))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._running = False
        self.feed = CameraFeed(
            command,
            self.offer,
            self._count_bad,
            max_frame_bytes=options.max_upload_bytes,
            timeout_s=options.camera_timeout_s,
        )
        self._worker = threading.Thread(
            target=self._classify_loop, name="edgeship-camera-classify", daemon=True
        )

    # --- frames in -------------------------------------------------------------------------

    def offer(self, jpeg: bytes, arrived: float) -> None:
        """A frame from the camera: taken for classifying, or dropped (never queued)."""
        with self._lock:
            if arrived - self._last_taken < 0.9 / self.fps:
                self.counts["dropped"] += 1
                return
            self._last_taken = arrived
            if self._slot is not None:  # the classifier is still busy: the older goes
                self.counts["dropped"] += 1
            self._slot = (jpeg, arrived)
            self._lock.notify()

    def _count_bad(self, n: int) -> None:
        with self._lock:
            self.counts["bad"] += n

    def _classify_loop(self) -> None:
        while True:
            with self._lock:
                while self._slot is None and self._running:
                    self._lock.wait()
                if not self._running:
                    return
                slot, self._slot = self._slot, None
            assert slot is not None  # the wait ends on a frame, or returned above
            self._classify(*slot)

    def _classify(self, jpeg: bytes, arrived: float) -> None:
        service = self.service
        model = service.models[service.default]
        try:
            record, seconds = service.classify(model, jpeg, DEFAULT_TOP_K)
        except EdgeshipError:  # a frame that splits but does not decode
            service.metrics.error("camera_bad_frame")
            self._count_bad(1)
            return
        except Exception:  # noqa: BLE001 - one frame must never stop the camera
            service.metrics.error("internal")
            self._count_bad(1)
            return
        now = time.monotonic()
        latency = now - arrived
        saved = self._save(jpeg, record["label"])
        service.metrics.prediction(model.name, record["label"], "camera", seconds)
        service.recent.add(record, "camera", saved.name if saved else None)
        with self._lock:
            self._seq += 1
            seq = self._seq
            self.counts["classified"] += 1
            self._latency.observe(latency)
            self._times.append(now)
            event = {
                "seq": seq,
                "time": time.time(),
                **record,
                "frame_latency_ms": round(latency * 1e3, 2),
            }
            self.latest = (seq, jpeg, json.dumps(event))
        service.append_result(
            {
                "time": event["time"],
                "source": "camera",
                "image": str(saved) if saved else None,
                **record,
            }
        )
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed: the server is stopping
                self._loop = None

    # --- saving (--camera-save) --------------------------------------------------------------

    @staticmethod
    def _saved_files(folder: Path | None) -> list[Path]:
        if folder is None:
            return []
        return sorted(Path(folder).glob("camera-*.jpg"))

    def _save(self, jpeg: bytes, label: str) -> Path | None:
        """With --camera-save: the frame as camera-TIME-LABEL.jpg; the oldest beyond the
        bound removed. A failure to write is counted, never raised."""
        folder = self.service.options.camera_save
        if folder is None:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"camera-{stamp}-{self._seq + 1:08d}-{_UNSAFE.sub('_', label)[:40]}.jpg"
        path = Path(folder) / name
        try:
            tmp = path.with_name(f".{name}.part")
            tmp.write_bytes(jpeg)
            os.replace(tmp, path)
        except OSError:
            self.service.metrics.error("camera_save")
            return None
        self._saved.append(path)
        while len(self._saved) > self.service.options.camera_save_max:
            old = self._saved.popleft()
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                self.service.metrics.error("camera_save")
        return path

    # --- the event loop side (SSE) -----------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the server's event-stream listeners on `loop` at each new answer."""
        self._loop, self._event = loop, asyncio.Event()

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def next_event(self, after: int, wait_s: float) -> tuple[int, str] | None:
        """The newest answer after `after` (seq, JSON), waiting at most `wait_s` for one."""
        latest = self.latest
        if latest is not None and latest[0] != after:
            return latest[0], latest[2]
        if self._event is not None:
            try:
                await asyncio.wait_for(self._event.wait(), wait_s)
            except TimeoutError:
                return None
        else:
            await asyncio.sleep(wait_s)
        latest = self.latest
        return (latest[0], latest[2]) if latest is not None and latest[0] != after else None

    # --- start, stop, state ------------------------------------------------------------------

    def start(self) -> None:
        """Start the command and the classifier (once)."""
        if self._running:
            return
        self._running = True
        self._worker.start()
        self.feed.start()

    def stop(self) -> None:
        """Stop the command and the classifier."""
        if not self._running:
            return
        self.feed.stop()
        with self._lock:
            self._running = False
            self._lock.notify()
        self._worker.join(timeout=30)

    def frames_per_second(self) -> float:
        """Frames classified a second over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            return len(self._times) / FPS_WINDOW_S

    def health(self) -> dict[str, Any]:
        """The camera's part of /healthz."""
        feed = self.feed
        with self._lock:
            counts = dict(self.counts)
        return {
            "camera": feed.state,
            "camera_source": self.command.describe,
            "camera_restarts": feed.restarts,
            "camera_last_error": feed.last_error,
            "camera_frames": counts,
            "camera_fps": round(self.frames_per_second(), 2),
        }

    def render_metrics(self) -> str:
        """The camera's lines of /metrics (Prometheus text)."""
        with self._lock:
            counts = dict(self.counts)
            latency = self._latency.copy()
        out = [
            "# HELP edgeship_camera_frames_total Camera frames: classified, dropped (over "
            "--camera-fps or while busy), bad (garbage, truncated, oversized, undecodable).",
            "# TYPE edgeship_camera_frames_total counter",
            *(f'edgeship_camera_frames_total{{result="{k}"}} {n}' for k, n in counts.items()),
            "# HELP edgeship_camera_fps Camera frames classified a second (last 5 s).",
            "# TYPE edgeship_camera_fps gauge",
            f"edgeship_camera_fps {self.frames_per_second():.3f}",
            "# HELP edgeship_camera_restarts_total Times the camera command was restarted.",
            "# TYPE edgeship_camera_restarts_total counter",
            f"edgeship_camera_restarts_total {self.feed.restarts}",
            "# HELP edgeship_camera_up 1 while frames come (state streaming).",
            "# TYPE edgeship_camera_up gauge",
            f"edgeship_camera_up {int(self.feed.state == 'streaming')}",
            "# HELP edgeship_camera_frame_latency_seconds From a frame's last byte read to "
            "its answer.",
            "# TYPE edgeship_camera_frame_latency_seconds histogram",
        ]
        out += latency.lines("edgeship_camera_frame_latency_seconds")
        return "\n".join(out) + "\n"
