"""`serve --watch DIR`: each image file that is complete in DIR, once, as it lands.

Complete means closed after writing (`IN_CLOSE_WRITE`) or renamed into the folder
(`IN_MOVED_TO`: `rpicam-still -o x.jpg.part` then `mv`, or any `write to temp + rename`),
as Linux's inotify reports them: a file still being written is never opened. inotify is called
through ctypes (standard library, no dependency); hidden files (`.x.jpg`) and names that are
not images are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

# .heic/.heif (an iPhone's photos) and .avif are taken too: read where Pillow can, else an error
# line in --results that says what to do, not silence.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
     ".heic", ".heif", ".avif"}
)
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


class WatchError(EdgeRuntimeError):
    """The watched folder cannot be watched (missing, not a folder, no inotify)."""


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image suffix."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


class FolderWatcher:
    """Calls `on_file(path)` from its own thread for every complete image file in `folder`."""

    def __init__(self, folder: str | os.PathLike, on_file: Callable[[Path], None]) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            what = "is not a folder" if self.folder.exists() else "does not exist"
            raise WatchError(
                f"--watch: the folder {what}; create it first (mkdir -p). "
                f"Received: path={self.folder}"
            )
        self._on_file = on_file
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            raise WatchError(
                f"--watch needs Linux inotify, which this system lacks. Received: {libc_name}"
            ) from None
        if self._fd < 0:
            raise WatchError(f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}")
        wd = libc.inotify_add_watch(
            self._fd, os.fsencode(self.folder), _IN_CLOSE_WRITE | _IN_MOVED_TO
        )
        if wd < 0:
            err = ctypes.get_errno()
            os.close(self._fd)
            raise WatchError(
                f"--watch: cannot watch the folder ({os.strerror(err)}). Received: "
                f"path={self.folder}"
            )
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._loop, name="edgeship-watch", daemon=True)

    def start(self) -> FolderWatcher:
        """Start the watching thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (after the file in hand, if any) and close the inotify handle."""
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for fd in (self._fd, self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._stop_r = self._stop_w = -1

    def _loop(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 64 * 1024)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    continue
                return
            for name in self._names(data):
                if is_image_name(name):
                    self._on_file(self.folder / name)

    @staticmethod
    def _names(data: bytes) -> list[str]:
        names, offset = [], 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            if mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO) and not mask & _IN_Q_OVERFLOW:
                name = os.fsdecode(raw.rstrip(b"\0"))
                if name and name not in names:
                    names.append(name)
        return names
