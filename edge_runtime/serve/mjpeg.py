"""An MJPEG byte stream (what `rpicam-vid --codec mjpeg -o -` and `ffmpeg -f mjpeg -` write)
split into JPEG frames.

A frame starts at SOI (`FF D8 FF`) and ends at the EOI (`FF D9`) that closes its last scan: the
header segments are walked by their lengths (so an EXIF thumbnail's own SOI/EOI inside APP1 is
skipped), the entropy-coded data scanned for a marker (`FF 00`, `FF D0..D7` and fill bytes are
data). Bytes before an SOI are garbage: skipped and counted. A frame that meets a new SOI
before its EOI is truncated: dropped and counted. A frame over `max_frame_bytes` is dropped
and counted, and its remaining bytes skipped until the next SOI, so the buffer never holds more
than `max_frame_bytes` plus one read.
"""

from __future__ import annotations

import re

SOI = b"\xff\xd8\xff"
EOI = b"\xff\xd9"
_SOS = 0xDA
# A marker that ends entropy-coded data: FF then anything but 00 (stuffing), D0..D7 (restart
# markers) and FF (fill, the next FF is looked at instead).
_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class MjpegSplitter:
    """Feed it bytes as they come; it returns the complete JPEG frames among them."""

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 64:
            raise ValueError(f"max_frame_bytes must be at least 64. Received: {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self.bad = 0  # garbage runs, truncated frames and oversized frames, each counted once
        self.frames = 0
        self._buf = bytearray()
        self._in_frame = False
        self._pos = 0  # where the walk of the frame at the buffer's start stands
        self._in_scan = False
        self._skipping = False  # dropping the rest of an oversized frame: not counted again

    @property
    def buffered(self) -> int:
        """Bytes held now (bounded by `max_frame_bytes` plus the last read)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they complete, in order."""
        self._buf += data
        frames = []
        while True:
            if not self._in_frame and not self._find_start():
                break
            frame = self._walk()
            if frame is None:
                if not self._in_frame:  # a broken frame was dropped: look for the next
                    continue
                if len(self._buf) > self.max_frame_bytes:
                    self._drop(len(self._buf))
                    continue
                break
            frames.append(frame)
        return frames

    def _find_start(self) -> bool:
        """Move to the next SOI, dropping (and counting) the garbage before it."""
        start = self._buf.find(SOI)
        if start < 0:
            keep = 2  # an SOI may be split across two reads
            if len(self._buf) > keep:
                if not self._skipping:
                    self.bad += 1
                    self._skipping = True  # one garbage run counts once
                del self._buf[:-keep]
            return False
        if start > 0:
            if not self._skipping:
                self.bad += 1
            del self._buf[:start]
        self._skipping = False
        self._in_frame, self._pos, self._in_scan = True, 2, False
        return True

    def _drop(self, upto: int) -> None:
        """Drop a broken frame (the buffer's first `upto` bytes), counting it once: its
        remaining bytes, up to the next SOI, are skipped without counting again."""
        self.bad += 1
        del self._buf[:upto]
        self._in_frame = False
        self._skipping = True

    def _walk(self) -> bytes | None:
        """The frame at the buffer's start if it is complete; None while more bytes are
        needed (or after dropping a broken one, with `_in_frame` False)."""
        buf = self._buf
        while True:
            if self._in_scan:
                found = _SCAN_END.search(buf, self._pos)
                if found is None:
                    self._pos = max(self._pos, len(buf) - 1)
                    return None
                at, marker = found.start(), buf[found.start() + 1]
                if marker == 0xD9:
                    if at + 2 > self.max_frame_bytes:  # it came whole in one read
                        self._drop(at + 2)
                        return None
                    frame = bytes(buf[: at + 2])
                    del buf[: at + 2]
                    self._in_frame = False
                    self.frames += 1
                    return frame
                if marker == 0xD8:  # a new frame began: this one was cut short
                    self._drop(at)
                    return None
                self._in_scan, self._pos = False, at  # another segment (progressive JPEG)
                continue
            if self._pos + 4 > len(buf):
                return None
            if buf[self._pos] != 0xFF:  # not a segment: the frame is broken
                self._drop(self._pos)
                return None
            marker = buf[self._pos + 1]
            if marker == 0xFF:
                self._pos += 1
            elif marker in _STANDALONE:
                self._pos += 2
            elif marker == 0xD8:
                self._drop(self._pos)
                return None
            elif marker == 0xD9:  # EOI without a scan: not an image
                self._drop(self._pos + 2)
                return None
            else:
                length = int.from_bytes(buf[self._pos + 2 : self._pos + 4], "big")
                if length < 2:
                    self._drop(self._pos)
                    return None
                self._pos += 2 + length
                self._in_scan = marker == _SOS
