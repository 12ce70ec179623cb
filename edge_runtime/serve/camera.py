"""The camera's command, supervised: started, read, split into frames, restarted with backoff.

One thread runs the command (its own process group), reads its standard output through the
MJPEG splitter and hands each frame to `on_frame(jpeg, arrived)`. The command is stopped and
started again when it exits, or when no good frame came for `timeout_s` (a hang, or a stream of
garbage): after 0.5 s, then 1, 2, 4 ... at most 30 s between starts. The state is `starting`,
`streaming` (frames come), `restarting`, or `failed` after `FAIL_AFTER` starts in a row that
gave no frame (it keeps trying, at the longest backoff; a frame makes it `streaming` again).
Memory is bounded: the splitter holds at most one frame's bound plus one read, stderr's tail
2 KiB.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from edge_runtime.serve.camera_source import CameraCommand
from edge_runtime.serve.mjpeg import MjpegSplitter

READ_BYTES = 64 * 1024
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
FAIL_AFTER = 4  # starts in a row without a frame: `failed`
STDERR_TAIL = 2048


def _stop_group(
    proc: subprocess.Popen[bytes], grace_s: float = 2.0, wait_s: float = 0.0
) -> int | None:
    """After `wait_s` for it to end by itself, SIGTERM the command's process group, SIGKILL
    after `grace_s`; its exit code."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait_s)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return None


class CameraFeed:
    """Runs `command` in its own thread; frames go to `on_frame`, broken ones to `on_bad`."""

    def __init__(
        self,
        command: CameraCommand,
        on_frame: Callable[[bytes, float], None],
        on_bad: Callable[[int], None],
        *,
        max_frame_bytes: int,
        timeout_s: float = 5.0,
    ) -> None:
        self.command = command
        self.state = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self.pid: int | None = None
        self._on_frame, self._on_bad = on_frame, on_bad
        self._max_frame_bytes = max_frame_bytes
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="edgeship-camera", daemon=True)

    def start(self) -> CameraFeed:
        """Start the supervising thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the command and the thread."""
        self._stop.set()
        os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self.state = "stopped"

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            got_frames, why = self._run_once()
            if self._stop.is_set():
                return
            failures = 1 if got_frames else failures + 1
            self.last_error = why
            self.restarts += 1
            self.state = "failed" if failures >= FAIL_AFTER else "restarting"
            delay = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
            if select.select([self._stop_r], [], [], delay)[0]:
                return

    def _run_once(self) -> tuple[bool, str]:
        """Run the command once until it exits, hangs or is stopped: (frames came, why not)."""
        env = dict(os.environ, **dict(self.command.env))
        try:
            proc = subprocess.Popen(
                self.command.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=env,
            )
        except OSError as err:
            return False, f"cannot start {self.command.argv[0]}: {err.strerror}"
        self.pid = proc.pid
        splitter = MjpegSplitter(self._max_frame_bytes)
        assert proc.stdout is not None and proc.stderr is not None  # both PIPE
        out, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        readable, tail = [out, err_fd, self._stop_r], b""
        last_good, got_frames, why = time.monotonic(), False, ""
        try:
            while True:
                left = self._timeout_s - (time.monotonic() - last_good)
                if left <= 0:
                    why = f"no frame for {self._timeout_s:g} s"
                    break
                ready = select.select(readable, [], [], left)[0]
                if self._stop_r in ready:
                    return got_frames, "stopped"
                if err_fd in ready:
                    data = os.read(err_fd, 4096)
                    tail = (tail + data)[-STDERR_TAIL:]
                    if not data:
                        readable.remove(err_fd)
                if out not in ready:
                    continue
                data = os.read(out, READ_BYTES)
                if not data:
                    why = "exited"
                    break
                bad = splitter.bad
                frames = splitter.feed(data)
                if splitter.bad > bad:
                    self._on_bad(splitter.bad - bad)
                if frames:
                    last_good, got_frames = time.monotonic(), True
                    self.state = "streaming"
                    for frame in frames:
                        self._on_frame(frame, last_good)
        finally:
            code = _stop_group(proc, wait_s=1.0 if why == "exited" else 0.0)
            proc.stdout.close()
            proc.stderr.close()
            self.pid = None
        said = tail.decode("utf-8", "replace").strip().splitlines()
        detail = f" (exit code {code})" if why == "exited" else ""
        return got_frames, why + detail + (f": {said[-1]}" if said else "")
