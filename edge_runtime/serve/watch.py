"""`serve --watch DIR`: each image file that is complete in DIR, once, as it lands.

Complete means closed after writing (`IN_CLOSE_WRITE`) or renamed into the folder
(`IN_MOVED_TO`: `rpicam-still -o x.jpg.part` then `mv`, or any `write to temp + rename`),
as Linux's inotify reports them: a file still being written is never opened. inotify is called
through ctypes (standard library, no dependency); hidden files (`.x.jpg`) and names that are
not images are skipped.

Nothing in a file can stop the watcher: a file is opened with `O_NOFOLLOW | O_NONBLOCK` (a
symlink is refused, not followed; a FIFO does not block), checked with `fstat` to be a regular
file and read up to the upload limit; any exception of the callback for one file is counted and
the loop goes on. The loop stops only when the folder itself goes (removed, renamed, unmounted)
or inotify fails: then `failure` says why and `on_failure` is called.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

# .heic/.heif (an iPhone's photos) and .avif are taken too: read where Pillow can, else an error
# line in --results that says what to do, not silence.
IMAGE_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".heic",
        ".heif",
        ".avif",
    }
)
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_UNMOUNT = 0x00002000
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_FOLDER_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_IGNORED
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name


class WatchError(EdgeRuntimeError):
    """The watched folder cannot be watched (missing, not a folder, no inotify)."""


class WatchedFileError(EdgeRuntimeError):
    """A watched file that is not read: a symlink, a FIFO or device, or over the size limit."""


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image suffix."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def read_watched_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, never following a symlink nor
    waiting on a FIFO; WatchedFileError otherwise (OSError for the system's own refusals)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise WatchedFileError("a symbolic link: not followed") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a regular file"
            raise WatchedFileError(f"{kind}: not read")
        if info.st_size > limit:
            raise WatchedFileError(
                f"{info.st_size} bytes, over the limit of {limit} (--max-upload-mb)"
            )
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew after fstat
                raise WatchedFileError(f"over the limit of {limit} bytes (--max-upload-mb)")
        return b"".join(chunks)
    finally:
        os.close(fd)


class FolderWatcher:
    """Calls `on_file(path)` from its own thread for every complete image file in `folder`."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        on_file: Callable[[Path], None],
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.folder = Path(folder)
        self.failure: str | None = None
        self.file_errors = 0  # files whose callback raised (the service's never should)
        self.last_file_error: str | None = None
        self._on_failure = on_failure
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
            self._fd,
            os.fsencode(self.folder),
            _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_DELETE_SELF | _IN_MOVE_SELF,
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

    @property
    def alive(self) -> bool:
        """True while the watching thread runs."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self._watch()
        except BaseException as err:  # noqa: BLE001 - recorded, then reported by on_failure
            self._fail(f"{type(err).__name__}: {err}")

    def _fail(self, why: str) -> None:
        self.failure = why
        self._on_failure()

    def _watch(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 64 * 1024)
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    continue
                self._fail(f"reading inotify failed ({err.strerror})")
                return
            names, gone = self._events(data)
            for name in names:
                if is_image_name(name):
                    self._one(self.folder / name)
            if gone:
                self._fail("the watched folder was removed, renamed or unmounted")
                return

    def _one(self, path: Path) -> None:
        """The callback for one file; whatever it raises stays with that file."""
        try:
            self._on_file(path)
        except Exception as err:  # noqa: BLE001 - one file must never stop the watcher
            self.file_errors += 1
            self.last_file_error = f"{type(err).__name__}: {err}"

    @staticmethod
    def _events(data: bytes) -> tuple[list[str], bool]:
        """The complete files' names (once each), and whether the folder itself went."""
        names, gone, offset = [], False, 0
        while offset + _EVENT.size <= len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            gone = gone or bool(mask & _FOLDER_GONE)
            if mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO) and not mask & _IN_Q_OVERFLOW:
                name = os.fsdecode(raw.rstrip(b"\0"))
                if name and name not in names:
                    names.append(name)
        return names, gone
